// The instances of the scaled-out hub a test may connect to (SIGNALR_INSTANCES, comma-separated
// base URLs of servers sharing one Redis), and helpers to spread connections over them.
import assert from "node:assert/strict";
import { connect, recorder, withTimeout } from "../harness.mjs";

export const INSTANCES = (process.env.SIGNALR_INSTANCES ?? "").split(",").filter(Boolean);
if (INSTANCES.length < 2) {
    throw new Error("SIGNALR_INSTANCES must name at least two servers");
}
export const HUB = "/scaled";

/** A started connection to instance `index`, as `user` if given, with its id and instance. */
export async function member(t, index, combo, { user, stateful } = {}) {
    const options = user ? { accessTokenFactory: () => `token-${user}` } : {};
    const connection = await connect(t, INSTANCES[index] + HUB, combo, { options, stateful });
    const [id, instance] = await connection.invoke("whoami");
    return { connection, id, instance, routed: recorder(connection, "Routed") };
}

/** Tags each connection received (from `Routed(kind, tag)`). */
export function tags(m) {
    return m.routed.calls.map((args) => args[1]);
}

/**
 * Sends `tag` through `kind` from `sender`, then a marker to everyone: once every member has
 * the marker, anything misrouted would have arrived too. Returns who got `tag`.
 */
export async function routed(members, sender, kind, target, tag) {
    await withTimeout(sender.connection.invoke("route", kind, target, tag), 10_000, `route ${kind}`);
    const mark = `${tag}/mark`;
    await sender.connection.invoke("route", "all", null, mark);
    await Promise.all(
        members.map((m) =>
            withTimeout(
                (async () => {
                    while (!tags(m).includes(mark)) {
                        await m.routed.until(m.routed.calls.length + 1);
                    }
                })(),
                10_000,
                `marker ${mark}`,
            ),
        ),
    );
    return members.filter((m) => tags(m).includes(tag));
}

export function names(members) {
    return members.map((m) => m.name).sort();
}

export function assertSame(actual, expected, what) {
    assert.deepEqual(names(actual), names(expected), what);
}

// The service double and the app servers behind it, for the tests of tests/js/azure/:
// AZURE_DOUBLE_URL, and SIGNALR_INSTANCES (app servers of the scaled-out hub, sticky: a client
// stays on the instance whose negotiate it called) with AZURE_INSTANCE_PIDS.
import { withTimeout } from "../harness.mjs";

export const DOUBLE = process.env.AZURE_DOUBLE_URL;
if (!DOUBLE) {
    throw new Error("AZURE_DOUBLE_URL is not set (tests/clients/test_azure_js.py sets it)");
}
export const PIDS = (process.env.AZURE_INSTANCE_PIDS ?? "").split(",").filter(Boolean).map(Number);

/** The double's view: hubs, server ids, clients (owner, migrated_from), message counts. */
export async function doubleState() {
    const response = await fetch(`${DOUBLE}/_double/state`);
    return await response.json();
}

export async function control(path) {
    const response = await fetch(`${DOUBLE}/_double/${path}`, { method: "POST" });
    if (!response.ok) {
        throw new Error(`${path}: ${response.status}`);
    }
    return await response.json();
}

/** The client as the double sees it. */
export async function clientState(connectionId) {
    return (await doubleState()).clients[connectionId];
}

/** Waits (polling the double, 50 ms apart) until `check(state)` holds. */
export async function until(check, what, ms = 15_000) {
    return withTimeout(
        (async () => {
            for (;;) {
                const state = await doubleState();
                const found = check(state);
                if (found) {
                    return found;
                }
                await new Promise((resolve) => setTimeout(resolve, 50));
            }
        })(),
        ms,
        what,
    );
}

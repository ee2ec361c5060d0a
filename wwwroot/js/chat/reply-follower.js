// Following one reply by chunk number (the ResumeReply stream, docs/chat.md "The resume
// contract"): pure logic, no DOM and no SignalR, so the page, the Angular client and
// Node's unit tests (tests/js/page/) all use this one file.
//
// The server numbers a reply's chunks 1, 2, … and ends the stream with one end item. The
// follower reports each chunk once, in order: a duplicate (a replay after a resume) is
// skipped, and a gap (a chunk, or the end, numbered past the next one expected) makes it
// subscribe again after the last chunk it reported, so nothing is missed. A withdrawn
// reply's end says the server dropped every chunk (it comes with `sequence: 0`): the
// follower starts over from 0 and reports the end as "withdrawn", so the caller takes the
// shown text away.

/** Subscriptions again after gaps before the follower gives up and ends with an error. */
export const MAX_RESTARTS = 3;

/** The end text when the stream fails while connected, or keeps skipping chunks. */
export const FOLLOW_FAILED = "The reply could not be followed. Please reload the page.";

/**
 * Follows a reply from chunk `after` on.
 *
 * @param {object} options
 * @param {(after: number, observer: {next(item: object): void, complete(): void, error(err: unknown): void}) => {dispose(): void}} options.subscribe
 *   opens the stream of the chunks numbered above `after` (ResumeReply(conversationId, after)).
 * @param {number} [options.after] the last chunk already shown (0: from the start).
 * @param {(text: string, sequence: number) => void} options.onText each new chunk, once, in order.
 * @param {(end: object) => void} options.onEnd once, last (see reply-follower.d.ts, `ReplyEnd`).
 * @param {() => boolean} [options.connected] asked when the stream fails: a lost connection
 *   ends nothing (the reply goes on on the server; reconnecting follows it again), a failure
 *   while connected ends the reply with `followError`.
 * @param {string} [options.followError]
 * @param {number} [options.maxRestarts]
 */
export function followReply({
    subscribe,
    after = 0,
    onText,
    onEnd,
    connected = () => true,
    followError = FOLLOW_FAILED,
    maxRestarts = MAX_RESTARTS,
}) {
    let sequence = after;
    let restarts = 0;
    let ended = false;
    let subscription = null;
    /** The end item, reported when the stream completes (as the stream's own end). */
    let endItem = null;
    /** Each subscription's items count only while it is the current one. */
    let generation = 0;

    function finish(end, dispose = true) {
        if (ended) return;
        ended = true;
        if (dispose) subscription?.dispose();
        subscription = null;
        onEnd({ ...end, sequence, produced: sequence > 0 });
    }

    function failed(error) {
        finish({ kind: "error", outcome: "error", error, cut: null, withdrawn: false, usage: null, replyId: null });
    }

    /** A chunk or an end numbered past the next one: ask again for what follows the last one shown. */
    function restart() {
        if (restarts >= maxRestarts) {
            failed(followError);
            return;
        }
        restarts += 1;
        open();
    }

    function ending(item) {
        const withdrawn = item.withdrawn === true;
        if (withdrawn) {
            sequence = 0; // the server dropped the reply's chunks: nothing shown of it stands
        } else if (item.sequence > sequence) {
            restart(); // the end says chunks came that were never reported
            return;
        }
        const cut = item.cut ?? null;
        const outcome = item.end;
        const kind = withdrawn ? "withdrawn" : cut ? "cut" : outcome;
        endItem = { kind, outcome, error: item.error ?? null, cut, withdrawn, usage: item.usage ?? null, replyId: item.replyId ?? null };
    }

    function open() {
        subscription?.dispose();
        const mine = ++generation;
        const current = () => mine === generation && !ended;
        subscription = subscribe(sequence, {
            next(item) {
                if (!current() || endItem) return;
                if ("end" in item && item.end !== undefined && item.end !== null) {
                    ending(item);
                } else if (typeof item.text === "string") {
                    if (item.sequence <= sequence) return; // already reported (a replay)
                    if (item.sequence > sequence + 1) {
                        restart();
                        return;
                    }
                    sequence = item.sequence;
                    onText(item.text, sequence);
                }
            },
            complete() {
                if (!current()) return;
                // no end item: no reply is running or kept in the conversation
                finish(endItem ?? { kind: "none", outcome: null, error: null, cut: null, withdrawn: false, usage: null, replyId: null }, false);
            },
            error() {
                if (!current()) return;
                if (connected()) {
                    failed(followError);
                } else {
                    // the connection dropped: the reply goes on on the server; reconnecting follows it again
                    generation += 1;
                    subscription = null;
                }
            },
        });
    }

    open();
    return {
        /** The last chunk reported. */
        get sequence() {
            return sequence;
        },
        /** Whether the end was reported. */
        get ended() {
            return ended;
        },
        /** Stops following: nothing more is reported. */
        dispose() {
            ended = true;
            generation += 1;
            subscription?.dispose();
            subscription = null;
        },
    };
}

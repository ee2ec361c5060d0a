// Server-to-client streams, cancellation, stream errors and client-to-server upload streams.
import assert from "node:assert/strict";
import {
    collect,
    connect,
    deferred,
    eventually,
    matrixTest,
    rejectsWith,
    signalR,
    uniqueKey,
    withTimeout,
} from "./harness.mjs";

const STREAM_FAILED = "An error occurred on the server while streaming results.";

matrixTest("stream yields every item then completes", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const { items } = await collect(c.stream("counter", 5, 0.01));
    assert.deepEqual(items, [0, 1, 2, 3, 4]);
});

matrixTest("stream method name is case-insensitive", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const { items } = await collect(c.stream("Counter", 2, 0));
    assert.deepEqual(items, [0, 1]);
});

matrixTest("empty stream completes at once", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const { items } = await collect(c.stream("empty_stream"), 3_000);
    assert.deepEqual(items, []);
});

matrixTest("disposing the subscription cancels the stream on the server", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const key = uniqueKey("cancel");
    const three = deferred();
    const items = [];
    let ended = false;
    const subscription = c.stream("endless", key).subscribe({
        next: (item) => {
            items.push(item);
            if (items.length === 3) {
                three.resolve();
            }
        },
        complete: () => {
            ended = true;
        },
        error: () => {
            ended = true;
        },
    });
    await withTimeout(three.promise, 5_000, "three stream items");
    assert.equal(await c.invoke("was_cancelled", key), false);
    subscription.dispose();
    await eventually(() => c.invoke("was_cancelled", key), 5_000, "the server to see the cancellation");
    const seen = items.length;
    // a round trip after the server saw the cancellation: any later item would arrive before it
    assert.equal(await c.invoke("echo", "barrier"), "barrier");
    assert.equal(items.length, seen, "no items are delivered after dispose()");
    assert.equal(ended, false, "a disposed subscription gets neither complete nor error");
    // the connection is still fine
    assert.equal(await c.invoke("echo", "after"), "after");
});

matrixTest("a stream does not block plain invocations", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const stream = collect(c.stream("counter", 10, 0.1), 10_000);
    const started = performance.now();
    assert.equal(await c.invoke("echo", "meanwhile"), "meanwhile");
    assert.ok(performance.now() - started < 500, "echo answered while the stream was running");
    const { items } = await stream;
    assert.equal(items.length, 10);
});

matrixTest("HubException while streaming reaches the client with its message", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await assert.rejects(collect(c.stream("stream_then_fail", true)), (err) => {
        assert.equal(err.message, `${STREAM_FAILED} HubException: stream broke`);
        assert.deepEqual(err.items, [1]);
        return true;
    });
});

matrixTest("other exceptions while streaming are hidden", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await assert.rejects(collect(c.stream("stream_then_fail", false)), (err) => {
        assert.equal(err.message, STREAM_FAILED);
        assert.deepEqual(err.items, [1]);
        return true;
    });
});

matrixTest("detailed errors show the exception while streaming", async (t, combo) => {
    const c = await connect(t, "/detailed", combo);
    await assert.rejects(collect(c.stream("stream_then_fail", false)), (err) => {
        assert.equal(err.message, `${STREAM_FAILED} RuntimeError: secret internals`);
        return true;
    });
});

matrixTest("upload stream: the method receives every item", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const subject = new signalR.Subject();
    const result = c.invoke("upload_sum", subject);
    for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]) {
        subject.next(n);
    }
    subject.complete();
    assert.equal(await withTimeout(result, 5_000, "upload_sum"), 120);
});

matrixTest("upload stream: items sent over time", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const subject = new signalR.Subject();
    const result = c.invoke("upload_sum", subject);
    for (const n of [10, 20, 30]) {
        await new Promise((resolve) => setTimeout(resolve, 30));
        subject.next(n);
    }
    subject.complete();
    assert.equal(await withTimeout(result, 5_000, "upload_sum"), 60);
});

matrixTest("upload stream: an empty upload completes", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const subject = new signalR.Subject();
    const result = c.invoke("upload_sum", subject);
    subject.complete();
    assert.equal(await withTimeout(result, 5_000, "upload_sum"), 0);
});

matrixTest("upload stream between plain arguments", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const subject = new signalR.Subject();
    const result = c.invoke("upload_concat", "<", subject, ">");
    subject.next("a");
    subject.next("b");
    subject.next("c");
    subject.complete();
    assert.equal(await withTimeout(result, 5_000, "upload_concat"), "<abc>");
});

matrixTest("upload stream through a streaming method", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const subject = new signalR.Subject();
    const done = collect(c.stream("upload_echo_stream", subject), 5_000);
    const sent = [1, "two", { three: 3 }, [4], null];
    for (const item of sent) {
        subject.next(item);
    }
    subject.complete();
    const { items } = await done;
    assert.deepEqual(items, sent);
});

matrixTest("upload stream with send(): non-blocking upload", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    // upload_sum's result is discarded for a send(); the connection must stay usable
    const subject = new signalR.Subject();
    await c.send("upload_sum", subject);
    subject.next(1);
    subject.complete();
    assert.equal(await c.invoke("echo", "still here"), "still here");
});

matrixTest("subject.error() surfaces in the method as a HubException with the client's text", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const subject = new signalR.Subject();
    const result = c.invoke("upload_catch", subject);
    subject.next(1);
    // the client sends err.message for an Error
    subject.error(new Error("client gave up"));
    assert.equal(await withTimeout(result, 5_000, "upload_catch"), "caught: client gave up");
});

matrixTest("subject.error() with a non-Error sends its string form", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const subject = new signalR.Subject();
    const result = c.invoke("upload_catch", subject);
    subject.error("plain reason");
    assert.equal(await withTimeout(result, 5_000, "upload_catch"), "caught: plain reason");
});

matrixTest("invoking a streaming method with invoke() fails with the exact text", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(
        c.invoke("counter", 3, 0),
        "The client attempted to invoke the streaming 'counter' method with a non-streaming invocation.",
    );
});

matrixTest("streaming a non-streaming method fails with the exact text", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await assert.rejects(collect(c.stream("echo", 1)), (err) => {
        assert.equal(
            err.message,
            "The client attempted to invoke the non-streaming 'echo' method with a streaming invocation.",
        );
        return true;
    });
});

matrixTest("a stream's CancellationToken is cancelled when the subscription is disposed", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const key = uniqueKey("token");
    const first = deferred();
    const subscription = c.stream("watched", key).subscribe({ next: () => first.resolve(), complete: () => {}, error: () => {} });
    await withTimeout(first.promise, 5_000, "a stream item");
    assert.equal(await c.invoke("token_cancelled", key), false);
    subscription.dispose();
    await eventually(() => c.invoke("token_cancelled", key), 5_000, "the method's token to be cancelled");
});

matrixTest("a plain method's CancellationToken is cancelled when its caller leaves", async (t, combo) => {
    const leaving = await connect(t, "/parallel", combo);
    const key = uniqueKey("leave");
    await leaving.send("wait_for_cancel", key);
    const watcher = await connect(t, "/testhub", combo);
    assert.equal(await watcher.invoke("token_cancelled", key), false);
    await leaving.stop();
    await eventually(() => watcher.invoke("token_cancelled", key), 5_000, "the method to see its caller leave");
});

matrixTest("the hub context tells which transport the caller uses", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    assert.equal(await c.invoke("transport_name"), combo.transport);
});

// Methods that return their stream, as .NET's ChannelReader<T> methods: the official
// functional tests' TestHub.Stream, InfiniteStream and StreamThrowException, and what
// their .ts tests expect of ASP.NET Core.
const INVOKING = (target) => `An unexpected error occurred invoking '${target}' on the server.`;

matrixTest("a method returning its stream streams what it returned (TestHub.Stream)", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const { items } = await collect(c.stream("Stream"));
    assert.deepEqual(items, ["a", "b", "c"]);
});

for (const target of ["InfiniteStream", "infinite_stream_async"]) {
    matrixTest(`a stream disposed at once still runs its token callback (${target})`, async (t, combo) => {
        const c = await connect(t, "/testhub", combo);
        const canceled = deferred();
        c.on("StreamCanceled", () => canceled.resolve());
        // subscribe then dispose at once: the StreamInvocation and its CancelInvocation leave
        // back to back, and the server reads them together
        const subscription = c.stream(target).subscribe({ next() {}, complete() {}, error: (err) => canceled.reject(err) });
        subscription.dispose();
        await withTimeout(canceled.promise, 5_000, "StreamCanceled");
        assert.equal(await c.invoke("echo", "after"), "after");
    });
}

for (const target of ["StreamThrowException", "stream_throw_exception_async"]) {
    matrixTest(`an exception before the stream is returned fails it with the invocation error, detailed (${target})`, async (t, combo) => {
        const c = await connect(t, "/detailed", combo);
        await assert.rejects(collect(c.stream(target, "An error occurred.")), (err) => {
            assert.equal(err.message, `${INVOKING(target)} InvalidOperationException: An error occurred.`);
            assert.deepEqual(err.items, []);
            return true;
        });
        assert.equal(await c.invoke("echo", "after"), "after");
    });

    matrixTest(`an exception before the stream is returned fails it with the invocation error (${target})`, async (t, combo) => {
        const c = await connect(t, "/testhub", combo);
        await assert.rejects(collect(c.stream(target, "secret")), (err) => {
            assert.equal(err.message, INVOKING(target));
            return true;
        });
    });
}

matrixTest("a stream method returning no stream fails with ASP.NET Core's text", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await assert.rejects(collect(c.stream("not_a_stream")), (err) => {
        assert.equal(err.message, "The value returned by the streaming method 'not_a_stream' is not a ChannelReader<> or IAsyncEnumerable<>.");
        return true;
    });
});

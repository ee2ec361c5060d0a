// The model providers as the fake sees them: Azure OpenAI with an API key (classic
// route), with Entra ID through managed identity (classic and v1 routes), and an
// OpenAI-compatible server. Every one gives the same hub behaviour.
import { test } from "node:test";
import {
    assert,
    ChatClient,
    echoTokens,
    fakeTokenRequests,
    LP_JSON,
    nonce,
    seed1Reply,
    seed2Reply,
    SERVERS,
    settledRecord,
    settledRecords,
    TEXT,
    WS_JSON,
} from "./chat_harness.mjs";

const TIMEOUT = 20_000;
const DEPLOYMENT = "chat-deployment";
const CLASSIC_PATH = `/openai/deployments/${DEPLOYMENT}/chat/completions`;
const API_VERSION = "2024-10-21";
const MSI_QUERY = { "api-version": "2019-08-01", resource: "https://cognitiveservices.azure.com" };
/** Marks this file's own token requests, so they are told apart from the servers'. */
const OUR_AGENT = "chat-suite";

let entraToken;
/** The access token the fake's managed-identity endpoint issues: what the Entra servers must present. */
async function expectedEntraToken() {
    if (entraToken === undefined) {
        const response = await fetch(`${SERVERS.fake}/msi/token?${new URLSearchParams(MSI_QUERY)}`, {
            headers: { "X-IDENTITY-HEADER": "fake-identity-header", "User-Agent": OUR_AGENT },
        });
        assert.equal(response.status, 200);
        entraToken = (await response.json()).access_token;
        assert.equal(typeof entraToken, "string");
    }
    return entraToken;
}

const PROVIDERS = [
    {
        name: "Azure OpenAI with an API key (CHAT_URL)",
        base: () => SERVERS.main,
        async check(record) {
            assert.equal(record.path, CLASSIC_PATH);
            assert.equal(record.query["api-version"], API_VERSION);
            assert.equal(record.api_key, "test-azure-key");
            assert.equal(record.deployment, DEPLOYMENT);
        },
    },
    {
        name: "Azure OpenAI with Entra ID (CHAT_ENTRA_URL)",
        base: () => SERVERS.entra,
        async check(record) {
            assert.equal(record.path, CLASSIC_PATH);
            assert.equal(record.query["api-version"], API_VERSION);
            assert.equal(record.api_key, null);
            assert.equal(record.authorization, `Bearer ${await expectedEntraToken()}`);
            assert.equal(record.deployment, DEPLOYMENT);
        },
    },
    {
        name: "Azure OpenAI v1 API with Entra ID (CHAT_ENTRA_V1_URL)",
        base: () => SERVERS.entraV1,
        async check(record) {
            assert.equal(record.path, "/openai/v1/chat/completions");
            assert.deepEqual(record.query, {}, "the v1 API takes no api-version");
            assert.equal(record.api_key, null);
            assert.equal(record.authorization, `Bearer ${await expectedEntraToken()}`);
            assert.equal(record.body.model, DEPLOYMENT);
        },
    },
    {
        name: "an OpenAI-compatible server (CHAT_OPENAI_URL)",
        base: () => SERVERS.openai,
        async check(record) {
            assert.equal(record.path, "/v1/chat/completions");
            assert.deepEqual(record.query, {});
            assert.equal(record.api_key, null);
            assert.equal(record.authorization, "Bearer test-azure-key");
            assert.equal(record.body.model, "fake-model");
        },
    },
];

for (const provider of PROVIDERS) {
    test(`${provider.name}: SendMessage gets a full streamed reply`, { timeout: TIMEOUT }, async (t) => {
        const c = await ChatClient.open(t, provider.base(), "/chatHub", { combo: WS_JSON });
        const text = `provider ${nonce("prov")}`;
        assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2)));
        const record = await settledRecord(text);
        assert.equal(record.status, 200);
        assert.equal(record.outcome, "completed");
        assert.equal(record.body.stream, true);
        assert.equal(record.body.messages[0].role, "system");
        assert.deepEqual(record.body.messages.at(-1), { role: "user", content: text });
        await provider.check(record);
    });

    test(`${provider.name}: AskAi and StreamMessage work too`, { timeout: TIMEOUT }, async (t) => {
        const c = await ChatClient.open(t, provider.base(), "/chat", { combo: LP_JSON });
        const prompt = `provider ask ${nonce("prov")}`;
        const { id, events } = await c.ask(prompt);
        assert.deepEqual(events, seed2Reply(id, echoTokens(prompt, 2)));
        await provider.check(await settledRecord(prompt));
        const streamed = `provider stream ${nonce("prov")}`;
        assert.deepEqual((await c.stream(streamed).done).items, echoTokens(streamed, 4));
        await provider.check(await settledRecord(streamed));
    });

    test(`${provider.name}: upstream failures get the same friendly texts`, { timeout: TIMEOUT }, async (t) => {
        const c = await ChatClient.open(t, provider.base(), "/chatHub", { combo: WS_JSON });
        for (const [marker, text, attempts] of [
            ["[[429]]", TEXT.busy, 3],
            ["[[401]]", TEXT.auth, 1],
            ["[[filter]]", TEXT.filtered, 1],
        ]) {
            const message = `${marker} ${nonce("prov")}`;
            assert.deepEqual(await c.send(message), [["ReceiveStatusUpdate", "thinking"], ["ReceiveError", text]], marker);
            const records = await settledRecords(message, attempts);
            assert.equal(records.length, attempts, `${marker} attempts`);
            for (const record of records) {
                await provider.check(record);
            }
        }
        const text = `provider after errors ${nonce("prov")}`;
        assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2)));
    });
}

test("managed identity: the Entra servers asked the fake's /msi/token for a Cognitive Services token", { timeout: TIMEOUT }, async () => {
    const requests = (await fakeTokenRequests()).filter((r) => r.headers["user-agent"] !== OUR_AGENT);
    const good = requests.filter(
        (r) =>
            r.status === 200 &&
            r.headers["x-identity-header"] === "fake-identity-header" &&
            r.query.resource === MSI_QUERY.resource &&
            r.query["api-version"] === MSI_QUERY["api-version"],
    );
    assert.ok(good.length >= 1, `token requests: ${JSON.stringify(requests)}`);
    // no token request was refused: the identity header and parameters were right every time
    assert.deepEqual(
        requests.filter((r) => r.status !== 200),
        [],
    );
});

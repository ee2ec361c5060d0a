// The hub calls: the connection to /chatHub (the stock SignalR browser client, the global
// `signalR` its classic script sets), who this page is (a token or a guest), and every hub
// method the page calls. Nothing here touches the page's DOM.

import { sendChunks } from "./attachments.js";

/** The automatic reconnect's delays (ms); after the last one the page retries every 5 s. */
const RETRY_DELAYS = [0, 2000, 5000, 10000, 30000];
/** The retry delay once the automatic reconnect gave up. */
export const CLOSED_RETRY_DELAY = 5000;
/** The conversation a page opens when it has none (each user and guest has one). */
export const DEFAULT = "default";
const HUB_ERROR = "HubException: ";
const GUEST_KEY = "chat-guest";
const TOKEN_KEY = "chat-token";

/**
 * The page's token: `/#token=<JWT>` moves to sessionStorage (the fragment never reaches the
 * server or its logs), and the address loses it.
 */
function takeToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.has("token")) {
        sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
        history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
}

/** The signed-in user's token, or null for a guest. */
export const token = takeToken();

/** Where the page keeps its choices: for the tab only when signed in, across visits for a guest. */
export const storage = token ? sessionStorage : localStorage;

/** The text for the user in a HubException the server raised, if it is one. */
export function serverText(err) {
    const text = String(err?.message ?? err);
    const at = text.indexOf(HUB_ERROR);
    return at >= 0 ? text.slice(at + HUB_ERROR.length) : null;
}

/** Set by the reconnect policy's caller: told each delay before the next try. */
let onRetryDelay = () => {};

const retryPolicy = {
    nextRetryDelayInMilliseconds(context) {
        const delay = RETRY_DELAYS[context.previousRetryCount];
        if (delay === undefined) return null;
        onRetryDelay(delay);
        return delay;
    },
};

/** The connection, with the query options ?transport=WebSockets|ServerSentEvents|LongPolling and ?protocol=messagepack. */
function build() {
    const params = new URLSearchParams(location.search);
    const options = {};
    const transport = params.get("transport");
    if (transport) options.transport = signalR.HttpTransportType[transport];
    if (token) options.accessTokenFactory = () => token;
    let builder = new signalR.HubConnectionBuilder()
        .withUrl("/chatHub", options)
        .withAutomaticReconnect(retryPolicy)
        .configureLogging(signalR.LogLevel.Warning);
    if (params.get("protocol") === "messagepack") {
        builder = builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
    }
    return builder.build();
}

const connection = build();

/** The connection's life: `retrying(ms)` before each automatic try, and the stock client's events. */
export function onConnectionEvents({ retrying, reconnecting, reconnected, closed }) {
    onRetryDelay = retrying;
    connection.onreconnecting(reconnecting);
    connection.onreconnected(reconnected);
    connection.onclose(closed);
}

export const start = () => connection.start();
export const stop = () => connection.stop();
export const isConnected = () => connection.state === signalR.HubConnectionState.Connected;
export const isReconnecting = () => connection.state === signalR.HubConnectionState.Reconnecting;
export const isDisconnected = () => connection.state === signalR.HubConnectionState.Disconnected;

/**
 * Who this page is: a signed-in user (the token), or a guest the server remembers by the id
 * localStorage keeps. True when it is the same one as before (a guest id the server forgot
 * gets a new one: its conversations are gone).
 */
export async function identify() {
    if (token) return true;
    const kept = localStorage.getItem(GUEST_KEY);
    const guest = await connection.invoke("UseGuestSession", kept);
    localStorage.setItem(GUEST_KEY, guest);
    return guest === kept;
}

/** A guest whose data was deleted starts over as a new guest. */
export function forgetGuest() {
    localStorage.removeItem(GUEST_KEY);
}

export const getChatInfo = () => connection.invoke("GetChatInfo");
export const listConversations = () => connection.invoke("ListConversations");
export const getConversation = (id) => connection.invoke("GetConversation", id);
export const createConversation = () => connection.invoke("CreateConversation", null);
export const renameConversation = (id, title) => connection.invoke("RenameConversation", id, title);
export const deleteConversation = (id) => connection.invoke("DeleteConversation", id);
export const clearConversation = (id) => connection.invoke("ClearConversation", id);
export const restoreConversation = (id) => connection.invoke("RestoreConversation", id);
export const startReply = (id, text) => connection.invoke("StartReply", id, text);
export const editMessage = (id, index, text) => connection.invoke("EditMessage", id, index, text);
export const regenerateReply = (id) => connection.invoke("RegenerateReply", id);
export const continueReply = (id) => connection.invoke("ContinueReply", id);
export const stopReply = (id) => connection.invoke("StopReply", id);
export const searchConversations = (query, page, pageSize) => connection.invoke("SearchConversations", query, page, pageSize);
export const exportConversation = (id, format) => connection.invoke("ExportConversation", id, format);
export const deleteAllMyData = () => connection.invoke("DeleteAllMyData");
export const setInstructions = (id, text) => connection.invoke("SetInstructions", id, text);
export const setModel = (id, model) => connection.invoke("SetModel", id, model);

export const startReplyWithAttachments = (id, text, attachmentIds) =>
    connection.invoke("StartReplyWithAttachments", id, text, attachmentIds);
/** A stored attachment with its content as a data URL (an image shown again after a reload). */
export const getAttachment = (id, attachmentId) => connection.invoke("GetAttachment", id, attachmentId);

/**
 * Uploads a file for the conversation's next message through the hub (client-to-server
 * streaming): UploadAttachment with a `signalR.Subject` of base64 chunks. Sending stops at once
 * when the server refuses the file (too large, wrong type…): the promise rejects with its text.
 * Resolves to `{id, name, type, size}`.
 */
export async function uploadAttachment(id, file) {
    const subject = new signalR.Subject();
    const result = connection.invoke("UploadAttachment", id, { name: file.name, type: file.type }, subject);
    let refused = false;
    result.catch(() => { refused = true; });
    await sendChunks(file, subject, { refused: () => refused });
    return result;
}

/** The `subscribe` a reply follower takes: ResumeReply(id, after), the chunks above `after`, then the end. */
export function resumeReply(id) {
    return (after, observer) => connection.stream("ResumeReply", id, after).subscribe(observer);
}

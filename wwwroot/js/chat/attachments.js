// Attachments on the client side, shared by the page and the Angular client (which imports
// this same file, as it does the reply follower): the checks made before a file is uploaded,
// their texts (the server's own, so a refusal reads the same whoever says it), and reading a
// file into the base64 chunks UploadAttachment takes. Pure: no DOM and no SignalR, so Node
// tests it; the caller gives it a subject-like object (`next`, `complete`, `error`).

/** The image types a vision model takes (as the server checks them). */
export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/** Bytes per UploadAttachment chunk: 16 KB is about 22 KB of base64, within a hub message's limit (about 48 KB). */
export const UPLOAD_CHUNK = 16 * 1024;

/** Whether a file is sent as an image (a thumbnail, an `image_url` part), by its declared type. */
export function isImage(file) {
    return IMAGE_TYPES.includes(String(file.type).toLowerCase());
}

/** Whether `model` reads images: GetChatInfo's `visionModels`. */
export function takesImages(info, model) {
    return (info?.visionModels ?? []).includes(model || info?.model || "");
}

/** 5 MB, 512 KB, 100 bytes: as the server says a limit. */
export function sizeText(count) {
    const mb = 1024 * 1024;
    if (count >= mb && count % mb === 0) return `${(count / mb).toLocaleString("en")} MB`;
    if (count >= 1024 && count % 1024 === 0) return `${(count / 1024).toLocaleString("en")} KB`;
    if (count >= mb) return `${(count / mb).toFixed(1)} MB`;
    if (count >= 1024) return `${(count / 1024).toFixed(1)} KB`;
    return `${count.toLocaleString("en")} bytes`;
}

/** The refusal for one file too many (0: attachments are off). */
export function tooMany(limit) {
    return limit === 0
        ? "Attachments are turned off on this server."
        : `At most ${limit} file${limit === 1 ? "" : "s"} can be attached to a message.`;
}

/**
 * Why `file` ({name, type, size}) cannot be attached, as the server would say it, or null:
 * the count (`chosen` files already wait), the type (an image type, text, or a code file by its
 * name), images for a model that reads none, the size. In the server's order, so the first
 * refusal is the one it would give.
 */
export function refusal(file, { limits, chosen, model, readsImages }) {
    if (chosen >= limits.maxFiles) return tooMany(limits.maxFiles);
    const type = String(file.type).toLowerCase();
    const name = String(file.name).toLowerCase();
    const image = type.startsWith("image/");
    const allowed = image
        ? IMAGE_TYPES.includes(type) && limits.types.includes(type)
        : limits.types.includes(type) ||
          (type.startsWith("text/") && limits.types.includes("text/*")) ||
          limits.extensions.some((ending) => name.endsWith(ending));
    if (!allowed) {
        return `This type of file cannot be attached: ${file.name}. Attach images (PNG, JPEG, GIF, WebP) or text and code files.`;
    }
    if (image && !readsImages) return noImages(model);
    if (file.size > limits.maxBytes) return `The file is too large. The limit is ${sizeText(limits.maxBytes)}.`;
    return null;
}

/** The refusal of an image for a model that reads none. */
export function noImages(model) {
    return `The model ${model} cannot read images. Attach text files only, or choose a model that reads images.`;
}

/**
 * Checks each of `files` in turn against the files already `chosen` (a count): the accepted
 * ones, and the last refusal (null when none), which is what a front end shows.
 */
export function check(files, { limits, chosen, model, readsImages }) {
    const accepted = [];
    let refused = null;
    for (const file of files) {
        const why = refusal(file, { limits, chosen: chosen + accepted.length, model, readsImages });
        if (why === null) accepted.push(file);
        else refused = why;
    }
    return { accepted, refused };
}

/** The picker's `accept`: anything for a model that reads images (the checks say why a file is refused), else text and code files only. */
export function pickerAccept(limits, readsImages) {
    return readsImages ? null : [...limits.extensions, "text/*", "application/json"].join(",");
}

/** The hint beside the picker: what it takes, and for screen readers and on hover why. */
export function pickerHint(readsImages) {
    return readsImages
        ? { text: "Images or text files", reason: "" }
        : { text: "Text files only", reason: "This model takes no images" };
}

/** Bytes as base64, in slices (a spread of a large array would overflow the call stack). */
export function toBase64(bytes) {
    let text = "";
    for (let at = 0; at < bytes.length; at += 0x8000) text += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
    return btoa(text);
}

/**
 * Reads `blob` (a File) one chunk at a time into `subject` as base64 strings, then completes it.
 * Stops sending once `refused()` says the server answered (a refusal ends the invocation; what
 * follows would only be dropped), yielding between chunks so that answer can be read. A file that
 * cannot be read (gone from the disk) ends the stream with the error, which is thrown too.
 */
export async function sendChunks(blob, subject, { refused = () => false, chunk = UPLOAD_CHUNK } = {}) {
    try {
        for (let at = 0; at < blob.size && !refused(); at += chunk) {
            subject.next(toBase64(new Uint8Array(await blob.slice(at, at + chunk).arrayBuffer())));
            await new Promise((resolve) => setTimeout(resolve));
        }
    } catch (err) {
        subject.error(err);
        throw err;
    }
    subject.complete();
}

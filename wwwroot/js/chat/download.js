// Saving a file the server rendered (ExportConversation's answer) as a download, shared by the
// page and the Angular client (which imports this same file). The browser needs a link to click:
// there is no other way to start a download from script.

/** How long the object URL outlives the click: the browser reads it after the click returns. */
const REVOKE_AFTER_MS = 10_000;

/** Starts the download of `{text, mediaType, fileName}` as UTF-8 text. */
export function downloadFile(file) {
    const url = URL.createObjectURL(new Blob([file.text], { type: `${file.mediaType};charset=utf-8` }));
    const link = document.createElement("a");
    link.href = url;
    link.download = file.fileName;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), REVOKE_AFTER_MS);
}

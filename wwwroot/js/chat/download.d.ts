// Types of download.js, for the Angular client (which imports that same file).

/** ExportConversation's answer: the rendered text and how to save it. */
export interface RenderedFile {
  text: string;
  mediaType: string;
  fileName: string;
}

/** Starts the download of the file as UTF-8 text. */
export function downloadFile(file: RenderedFile): void;

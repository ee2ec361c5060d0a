"use strict";
// Safe Markdown for model replies: marked parses, raw HTML in a reply is shown as text, and
// DOMPurify cleans what marked produced (javascript: links and the like) before it reaches
// the DOM. A streaming reply re-renders only its last, still-open block on each frame, so a
// long reply costs the same per token at the end as at the start. Code blocks are highlighted
// by highlight.js (when loaded) once the reply is complete. Both front ends use this file: the
// page loads it as a script, the Angular client bundles it (angular.json "scripts").

globalThis.ChatMarkdown = (() => {
    const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

    const parser = new marked.Marked({
        gfm: true,
        breaks: true, // a chat reply's single newlines are line breaks
        renderer: {
            html: ({ text }) => escapeHtml(text).replace(/\n(?!$)/g, "<br>"), // the model's HTML is text, never markup
        },
    });

    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
        if (node.tagName === "A") {
            node.setAttribute("target", "_blank");
            node.setAttribute("rel", "noopener noreferrer");
        }
    });

    /** Markdown -> a sanitized DocumentFragment. */
    function toFragment(markdown) {
        return DOMPurify.sanitize(parser.parse(markdown), {
            RETURN_DOM_FRAGMENT: true,
            FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
        });
    }

    /**
     * Where the text's finished blocks end: after the last blank line that is outside a code
     * fence. Blocks before it no longer change as tokens arrive.
     */
    function stableLength(text) {
        let fence = null, end = 0, offset = 0;
        for (const line of text.split("\n")) {
            const next = offset + line.length + 1;
            const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line);
            if (marker) {
                if (fence === null) fence = marker[1];
                else if (marker[1][0] === fence[0] && marker[1].length >= fence.length) fence = null;
            } else if (fence === null && line.trim() === "" && next <= text.length) {
                end = next;
            }
            offset = next;
        }
        return end;
    }

    /** Colours the code blocks of `root` (highlight.js escapes the code; it stays text). */
    function highlight(root) {
        if (!globalThis.hljs) return;
        for (const code of root.querySelectorAll("pre code")) {
            const language = /\blanguage-([\w+#-]+)/.exec(code.className)?.[1];
            if (language && !hljs.getLanguage(language)) continue; // unknown: left plain, no warning
            hljs.highlightElement(code);
        }
    }

    /** Adds a copy button to each code block of `root` that has something to copy. */
    function addCodeCopyButtons(root, makeCopyButton) {
        for (const pre of root.querySelectorAll("pre")) {
            if (pre.parentElement?.classList.contains("code-block") || !pre.textContent.trim()) continue;
            const wrapper = document.createElement("div");
            wrapper.className = "code-block";
            pre.replaceWith(wrapper);
            wrapper.append(makeCopyButton(() => pre.textContent, "Copy code"), pre);
        }
    }

    /** Renders a reply into `element` as its text grows. */
    class StreamingRenderer {
        constructor(element) {
            this.element = element;
            this.text = "";
            this.done = 0; // length of text rendered into finished blocks
            this.nextRender = 0; // performance.now() before which the open block is not rendered
            this.deferred = null; // the frame that makes up a skipped render
            this.finished = document.createElement("div");
            this.tail = document.createElement("div");
            this.finished.className = "md-blocks";
            this.tail.className = "md-blocks";
            element.replaceChildren(this.finished, this.tail);
        }

        append(chunk) {
            this.text += chunk;
            const stable = stableLength(this.text);
            if (stable > this.done) {
                this.finished.append(toFragment(this.text.slice(this.done, stable)));
                this.done = stable;
            }
            this.renderTail();
        }

        /**
         * A huge open block (one long paragraph or code block) costs more per render as it
         * grows: renders are spaced so they take at most about a fifth of the time, and a
         * skipped one is made up as soon as that allows, even if no token follows.
         */
        renderTail() {
            const now = performance.now();
            if (now < this.nextRender) {
                this.deferred ??= requestAnimationFrame(() => { this.deferred = null; this.renderTail(); });
                return;
            }
            this.tail.replaceChildren(toFragment(this.text.slice(this.done)));
            const took = performance.now() - now;
            this.nextRender = took > 4 ? now + 5 * took : 0;
        }

        /** One last full render, so the reply is exactly what the whole text says. */
        finish() {
            cancelAnimationFrame(this.deferred);
            this.deferred = null;
            this.nextRender = Infinity; // nothing renders into the parts any more
            this.element.replaceChildren(toFragment(this.text));
            highlight(this.element);
        }
    }

    return { toFragment, stableLength, highlight, addCodeCopyButtons, StreamingRenderer };
})();

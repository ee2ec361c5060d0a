import { Component, ElementRef, effect, inject, input } from '@angular/core';

/** wwwroot/js/markdown.js, bundled as a global script (angular.json): the page's renderer and sanitising. */
interface StreamingRenderer {
  readonly text: string;
  append(chunk: string): void;
  finish(): void;
}

declare const ChatMarkdown: {
  StreamingRenderer: new (element: HTMLElement) => StreamingRenderer;
  addCodeCopyButtons(root: HTMLElement, makeCopyButton: (text: () => string, label: string) => HTMLElement): void;
};

/** A copy button that says what happened. */
export function copyButton(text: () => string, label: string): HTMLButtonElement {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'copy-btn';
  button.textContent = 'Copy';
  button.setAttribute('aria-label', label);
  button.addEventListener('click', () => void copy(button, text()));
  return button;
}

export async function copy(button: HTMLElement, text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Copy failed';
  }
  setTimeout(() => (button.textContent = 'Copy'), 1500);
}

/**
 * A reply rendered from Markdown as it grows, exactly as the page renders it: marked, the model's
 * HTML shown as text, DOMPurify over the result, code highlighted and given copy buttons at the end.
 */
@Component({
  selector: 'app-markdown',
  template: '',
  host: { class: 'content' },
})
export class MarkdownView {
  readonly text = input.required<string>();
  readonly done = input(false);

  private readonly element = inject(ElementRef<HTMLElement>).nativeElement as HTMLElement;
  private renderer = new ChatMarkdown.StreamingRenderer(this.element);
  private finished = false;

  constructor() {
    effect(() => {
      const text = this.text();
      const done = this.done();
      if (this.finished || !text.startsWith(this.renderer.text)) {
        // a new text (not a continuation): start over
        this.renderer = new ChatMarkdown.StreamingRenderer(this.element);
        this.finished = false;
      }
      if (text.length > this.renderer.text.length) this.renderer.append(text.slice(this.renderer.text.length));
      if (done) {
        this.renderer.finish();
        ChatMarkdown.addCodeCopyButtons(this.element, copyButton);
        this.finished = true;
      }
    });
  }
}

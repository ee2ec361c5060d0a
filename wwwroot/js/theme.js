"use strict";
// Light or dark: the system's choice (prefers-color-scheme, in css/theme.css) until the user
// toggles; the choice is kept in localStorage. Loaded before the page renders, so a kept
// choice shows from the first paint. The Angular client bundles this file too.

globalThis.ChatTheme = (() => {
    const root = document.documentElement;
    const system = matchMedia("(prefers-color-scheme: dark)");
    const saved = localStorage.getItem("chat-theme");
    if (saved === "light" || saved === "dark") root.dataset.theme = saved;

    const dark = () => (root.dataset.theme ? root.dataset.theme === "dark" : system.matches);

    /** Makes `button` the toggle: aria-pressed says whether the dark theme is on. */
    function bind(button) {
        const sync = () => button.setAttribute("aria-pressed", String(dark()));
        sync();
        button.addEventListener("click", () => {
            root.dataset.theme = dark() ? "light" : "dark";
            localStorage.setItem("chat-theme", root.dataset.theme);
            sync();
        });
        system.addEventListener("change", sync);
    }

    return { bind, dark };
})();

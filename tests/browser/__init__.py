"""The page and the Angular client in headless Chromium."""

import { ApplicationConfig, provideBrowserGlobalErrorListeners, provideZonelessChangeDetection } from '@angular/core';

export const appConfig: ApplicationConfig = {
  providers: [
    provideBrowserGlobalErrorListeners(),
    // no zone.js: the signals the SignalR callbacks set schedule change detection
    provideZonelessChangeDetection(),
    // to use another server: { provide: AI_HUB_URL, useValue: 'https://chat.example.com/chat' }
  ],
};

// Debian's Chromium as root on a machine without outside network: no sandbox, no GPU, and no
// background connections (the closed network refuses them, many at a time).
import { chromium } from 'playwright-core';

export function launchChromium(executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-extensions',
      '--no-first-run',
    ],
  });
}

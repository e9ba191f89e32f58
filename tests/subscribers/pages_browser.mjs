// Opens a page behind a mail's link in headless Chromium at phone width, screenshots it,
// presses its one button, screenshots the answer.
// usage: node pages_browser.mjs <page url> <screenshot prefix>; prints one JSON line.
import { chromium } from "playwright-core";

const [url, prefix] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // The network is cut: every host but this machine fails to resolve, and anything that
    // still tries goes to a dead proxy.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
  ],
});
const origin = new URL(url).origin;
const requests = [];
const consoleErrors = [];
const result = {};
try {
  // A phone: 390 x 844 CSS pixels, touch, no JavaScript needed (the pages have none).
  const context = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    locale: "vi-VN",
  });
  const page = await context.newPage();
  page.on("request", (request) => requests.push(request.url()));
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  const response = await page.goto(url);
  result.status = response.status();
  result.title = await page.title();
  result.heading = await page.textContent("h1");
  const box = await page.locator("button").boundingBox();
  result.button = box;
  // Readable on a phone: nothing wider than the screen, text not tiny.
  result.scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  result.fontSize = await page.evaluate(() => getComputedStyle(document.body).fontSize);
  await page.screenshot({ path: `${prefix}-page.png`, fullPage: true });
  await Promise.all([page.waitForNavigation(), page.tap("button")]);
  result.afterHeading = await page.textContent("h1");
  result.afterUrl = page.url();
  await page.screenshot({ path: `${prefix}-done.png`, fullPage: true });
} catch (error) {
  result.error = String(error);
} finally {
  await browser.close();
}
result.foreign = requests.filter((r) => !r.startsWith(origin) && !r.startsWith("data:"));
result.requests = requests.length;
result.consoleErrors = consoleErrors;
console.log(JSON.stringify(result));

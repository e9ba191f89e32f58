// Drives the demo contact form in headless Chromium with the real ALTCHA widget.
// usage: node demo_form.mjs <page url> <screenshot path>; prints one JSON line.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
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
const foreign = [];
const consoleErrors = [];
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  page.on("request", (request) => {
    const target = request.url();
    if (!target.startsWith(origin) && !target.startsWith("data:") && !target.startsWith("blob:")) {
      foreign.push(target);
    }
  });
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(url);
  await page.fill("input[name=name]", "Nguyễn Văn Demo");
  await page.fill("input[name=email]", "demo@example.com");
  await page.fill("textarea[name=message]", "Xin chào từ trình duyệt");
  // The widget solves on load and puts its payload into the form's hidden `altcha` field.
  await page.waitForFunction(
    () => { const f = document.querySelector("input[name=altcha]"); return f && f.value; },
    null, { timeout: 60000 },
  );
  const payload = await page.inputValue("input[name=altcha]");
  await page.click("button[type=submit]");
  await page.waitForFunction(
    () => document.getElementById("result").dataset.status !== undefined, null, { timeout: 20000 },
  );
  const result = await page.textContent("#result");
  const status = await page.getAttribute("#result", "data-status");
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ status, result, payload, foreign, consoleErrors }));
} finally {
  await browser.close();
}

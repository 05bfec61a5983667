// screenshot.js saves a picture of walcast's live dashboard, as in
// docs/screenshot.png. Start `walcast demo`, let it run a minute, then:
//
//   node broadcast/web/screenshot.js 'http://localhost:8080/#token=…' docs/screenshot.png
//
// It uses Debian's Chromium (CHROMIUM to use another) through playwright-core
// (npm ci in broadcast/web/ first).
import { chromium } from "playwright-core";

const [url, out = "dashboard.png"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node broadcast/web/screenshot.js DASHBOARD_URL [OUT.png]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "open", null, { timeout: 15000 });
  // Long enough for the rate sparkline and a few live changes to flash.
  await page.waitForTimeout(Number(process.env.WAIT_MS || 8000));
  await page.screenshot({ path: out });
  console.log(`saved ${out}`);
} finally {
  await browser.close();
}

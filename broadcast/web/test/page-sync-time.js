// page-sync-time.js measures how long the dashboard takes, in headless
// Chromium, from opening to showing the full tables it synced from walcast
// (the time to the first state_end and the drawing after it). Start
// `walcast demo`, fill the database, then:
//
//   psql "$DEMO_DATABASE_URL" -c "INSERT INTO guarantee (committee_id, user_id, elector_name)
//     SELECT 1 + g % 6, g % 20, 'Elector ' || g FROM generate_series(1, 100000) g"
//   node broadcast/web/test/page-sync-time.js 'http://localhost:8080/#token=…' [runs]
//
// It uses Debian's Chromium (CHROMIUM to use another) through playwright-core.
import { chromium } from "playwright-core";

const [url, runs = "3"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node broadcast/web/test/page-sync-time.js DASHBOARD_URL [RUNS]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
try {
  for (let i = 0; i < Number(runs); i++) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const began = Date.now();
    await page.goto(url);
    await page.waitForFunction(() => window.walcastDashboard?.stats.syncs >= 1 && document.querySelector("#guarantees tr"), null, { timeout: 120000 });
    const took = Date.now() - began;
    const s = await page.evaluate(() => ({
      rows: [...(window.walcastDashboard.client?.tables.values() ?? [])].reduce((n, t) => n + t.size, 0),
      stateRows: window.walcastDashboard.client?.stats.stateRows,
    }));
    console.log(`run ${i + 1}: ${s.rows} rows (${s.stateRows} state rows received) synced and drawn in ${took} ms`);
    await page.close();
  }
} finally {
  await browser.close();
}

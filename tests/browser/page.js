// tests/browser/page.js - drives chexd's web page in Debian's headless chromium
// through playwright-core (run by tests/browser/test_page.sh, which installs
// playwright-core, starts chexd and fetches the API's own answer with curl).
//
// Environment: URL (chexd base), IMAGE (radiograph to upload), EXPECT (the
// API's JSON answer for IMAGE), SHOT (screenshot path), PROFILE (fresh
// user-data-dir), CHROMIUM (executable), TOKEN (optional: the daemon wants
// this bearer token; the page must fail without it and work with it),
// DROP_IMAGE + DROP_EXPECT (optional: a second file dropped on the drop zone
// after the screenshot, and the API's answer for it).
// Exit 0 when every check passed; prints one line per check.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");

const env = (k) => {
  const v = process.env[k];
  if (v === undefined) throw new Error("missing environment variable " + k);
  return v;
};
const URL_BASE = env("URL"), IMAGE = env("IMAGE"), SHOT = env("SHOT");
const PROFILE = env("PROFILE"), CHROMIUM = env("CHROMIUM");
const TOKEN = process.env.TOKEN || "";
const expected = JSON.parse(fs.readFileSync(env("EXPECT"), "utf8"));

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok - " + what);
}

async function main() {
  const ctx = await chromium.launchPersistentContext(PROFILE, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 1000 },
  });
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    const external = [], consoleErrors = [];
    // Only chexd may be contacted: anything else is recorded and refused.
    await page.route("**/*", (route) => {
      const u = route.request().url();
      if (u.startsWith(URL_BASE + "/") || u.startsWith("blob:") || u.startsWith("data:"))
        return route.continue();
      external.push(u);
      return route.abort();
    });
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));

    const resp = await page.goto(URL_BASE + "/", { waitUntil: "load" });
    check(resp.status() === 200, "GET / answers 200 without a token");
    check((await page.title()).includes("chexd"), "page title names chexd");

    // Accessibility basics: every input has a label, every button a name.
    const unlabelled = await page.$$eval("input", (els) =>
      els.filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id));
    check(unlabelled.length === 0, "every input has a label (" + unlabelled.join(",") + ")");

    if (TOKEN) {
      await page.setInputFiles("#file", IMAGE);
      await page.waitForFunction(() =>
        document.getElementById("status").classList.contains("error"), null, { timeout: 60000 });
      const st = await page.textContent("#status");
      check(st.includes("401"), "without the token the page shows the 401: " + st.trim());
      await page.fill("#token", TOKEN);
      await page.click("#classify");
    } else {
      await page.setInputFiles("#file", IMAGE);
    }

    const n = expected.predictions.length;
    await page.waitForFunction((k) => document.querySelectorAll("#bars button").length === k,
      n, { timeout: 120000 });
    check(true, n + " probability bars shown");

    const shown = await page.$$eval("#bars button", (bs) => bs.map((b) => ({
      label: b.dataset.label, p: Number(b.dataset.probability),
      text: b.querySelector(".value").textContent,
      width: parseFloat(b.querySelector(".fill").style.width),
    })));
    const api = new Map(expected.predictions.map((e) => [e.label, e.probability]));
    let worst = 0;
    for (const s of shown) {
      if (!api.has(s.label)) throw new Error("bar " + s.label + " is not in the API answer");
      worst = Math.max(worst, Math.abs(s.p - api.get(s.label)));
      const pct = (100 * api.get(s.label)).toFixed(1) + "%";
      if (s.text !== pct) throw new Error(s.label + " shows " + s.text + ", API says " + pct);
      if (Math.abs(s.width - 100 * api.get(s.label)) > 0.01)
        throw new Error(s.label + " bar width " + s.width + "% for p = " + api.get(s.label));
    }
    check(worst <= 1e-6, "probabilities shown equal the API's (max diff " + worst + ")");
    check(new Set(shown.map((s) => s.label)).size === n, "each label shown once");
    for (let i = 1; i < n; i++)
      if (shown[i].p > shown[i - 1].p) throw new Error("bars not sorted at " + shown[i].label);
    check(true, "bars sorted by probability, text and widths match");

    if (expected.demo) {
      await page.waitForSelector("#demo-warning:not([hidden])");
      const w = await page.textContent("#demo-warning");
      check(w.includes(expected.warning), "demo warning shown: " + w.trim());
    }

    // The top finding's map appears by itself.
    const top = shown[0].label;
    await page.waitForFunction((l) => {
      const img = document.getElementById("overlay");
      return !img.hidden && img.dataset.label === l && img.complete && img.naturalWidth > 0;
    }, top, { timeout: 120000 });
    check(true, "heat map of the top finding (" + top + ") shown");

    // Another finding, chosen with the keyboard.
    const pick = shown[Math.min(3, n - 1)].label;
    await page.focus('#bars button[data-label="' + pick + '"]');
    await page.keyboard.press("Enter");
    await page.waitForFunction((l) => {
      const img = document.getElementById("overlay");
      return !img.hidden && img.dataset.label === l && img.complete && img.naturalWidth > 0;
    }, pick, { timeout: 120000 });
    const pressed = await page.getAttribute('#bars button[data-label="' + pick + '"]',
      "aria-pressed");
    check(pressed === "true", "keyboard choice of " + pick + " marks its bar pressed");

    const img = await page.$eval("#overlay", (el) => {
      const c = document.createElement("canvas");
      c.width = el.naturalWidth;
      c.height = el.naturalHeight;
      const g = c.getContext("2d");
      g.drawImage(el, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let colourful = 0;
      for (let i = 0; i < d.length; i += 4)
        if (Math.abs(d[i] - d[i + 2]) > 40) colourful++;
      return { w: el.naturalWidth, h: el.naturalHeight, colourful: colourful / (d.length / 4),
        alt: el.alt, shownW: el.getBoundingClientRect().width };
    });
    check(img.w === expected.input.width && img.h === expected.input.height,
      "overlay has the radiograph's size " + img.w + "x" + img.h);
    check(img.colourful > 0.05, "overlay carries a colour heat map (" +
      (100 * img.colourful).toFixed(0) + "% coloured pixels)");
    check(img.alt.includes(pick.replace(/_/g, " ")), "overlay alt text names the finding");
    check(img.shownW > 200, "overlay displayed " + img.shownW.toFixed(0) + " px wide");

    const timing = await page.$$eval("#timing dd", (dd) => dd.map((d) => d.textContent));
    check(timing.length >= 5 && timing.every((t) => / ms$/.test(t)),
      "timing shown (" + timing.join(", ") + ")");

    await page.screenshot({ path: SHOT, fullPage: true });
    check(fs.statSync(SHOT).size > 10000, "screenshot saved: " + SHOT);
    if (process.env.DROP_IMAGE) {
      const want = JSON.parse(fs.readFileSync(env("DROP_EXPECT"), "utf8"));
      const name = require("path").basename(env("DROP_IMAGE"));
      const b64 = fs.readFileSync(env("DROP_IMAGE")).toString("base64");
      await page.evaluate(([b, n]) => {
        const bytes = Uint8Array.from(atob(b), (ch) => ch.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], n, { type: "application/octet-stream" }));
        const zone = document.getElementById("drop");
        zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
      }, [b64, name]);
      const wantTop = want.predictions.slice().sort((a, b) => b.probability - a.probability)[0];
      await page.waitForFunction(([l, w]) => {
        const img = document.getElementById("overlay");
        return img.dataset.label === l && img.naturalWidth === w && img.complete;
      }, [wantTop.label, want.input.width], { timeout: 120000 });
      const got = await page.$$eval("#bars button", (bs) => bs.map((b) =>
        [b.dataset.label, Number(b.dataset.probability)]));
      const m = new Map(want.predictions.map((e) => [e.label, e.probability]));
      const diff = Math.max(...got.map(([l, p]) => Math.abs(p - m.get(l))));
      check(got.length === want.predictions.length && diff <= 1e-6,
        "dropped " + name + ": bars equal the API's (max diff " + diff + "), heat map of " +
        wantTop.label + " at " + want.input.width + "x" + want.input.height);
    }
    check(external.length === 0, "no request left chexd (" + external.join(" ") + ")");
    const errs = consoleErrors.filter((e) => !(TOKEN && /401/.test(e)));
    check(errs.length === 0, "no script errors (" + errs.join(" | ") + ")");
  } finally {
    await ctx.close();
  }
}

main().catch((e) => {
  console.error("FAIL: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});

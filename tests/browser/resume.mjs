// A real browser reconnects by itself and receives what it missed, once each.
//
// Starts the herald binary named by HERALD_BIN (--dev, a temp data dir, 127.0.0.1:0,
// --retry-ms 500), opens its page `/` in the system chromium (driven by playwright-core, no
// browser download), publishes 3 events and sees them in the page, SIGKILLs the server,
// restarts it on the same port and data dir, publishes 3 more right away (the page is most
// likely still in its retry wait, so they reach it through Last-Event-ID replay), then
// checks that the page shows all 6 data values exactly once each and in order, that the
// page was never reloaded nor told to reconnect, and that its reconnect carried
// Last-Event-ID and shows up in the restarted server's GET /admin/connections.
// A second page follows a quiet topic that never gets an event before its connection is cut
// (an operator's DELETE /admin/connections/{id}); an event published while it waits to
// reconnect must still reach it, through the checkpoint id its stream started with. Then it
// publishes through its own form: an event type typed after it connected, and JSON data that
// must arrive as typed.
//
// With HERALD_BROWSER_TLS_CERT and HERALD_BROWSER_TLS_KEY the server speaks HTTPS with them,
// and the page's streams must arrive over HTTP/2, as a browser's do from a production
// deployment (node's own requests trust the CA named by NODE_EXTRA_CA_CERTS; the browser is
// told to accept the test certificate). Without them, plain HTTP/1.1.
//
// Environment: HERALD_BIN (required), CHROMIUM (default /usr/bin/chromium),
// HERALD_BROWSER_DEADLINE_MS (whole-run bound, default 90000), HERALD_BROWSER_TLS_CERT and
// HERALD_BROWSER_TLS_KEY (both or neither).
// Exit code 0 on success, 1 on a failed check or error, 2 when stopped by a signal.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const HERALD_BIN = process.env.HERALD_BIN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = Number(process.env.HERALD_BROWSER_DEADLINE_MS || 90_000);
const RETRY_MS = 500;
const TLS_CERT = process.env.HERALD_BROWSER_TLS_CERT;
const TLS_KEY = process.env.HERALD_BROWSER_TLS_KEY;
// What the browser's network stack must report for every stream it opens.
const STREAM_PROTOCOL = TLS_CERT ? "h2" : "http/1.1";
const STARTUP_TIMEOUT_MS = 20_000;
const DELIVERY_TIMEOUT_MS = 20_000;
const TOPIC = "demo";
const QUIET_TOPIC = "demo-quiet";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const t0 = Date.now();
const log = (msg) => console.log(`[resume.mjs +${((Date.now() - t0) / 1000).toFixed(2)}s] ${msg}`);

class CheckFailed extends Error {}
function check(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}

// ---- everything this script starts, so that it can all be stopped on any exit ----
const started = { herald: null, browser: null, dirs: [] };
let cleaning = null;
let stoppedBy = null;

async function cleanup() {
  if (cleaning) return cleaning;
  cleaning = (async () => {
    if (started.herald) started.herald.kill();
    if (started.browser) {
      const b = started.browser;
      started.browser = null;
      await Promise.race([b.close().catch(() => {}), sleep(5_000)]);
    }
    for (const d of started.dirs) {
      try {
        rmSync(d, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
    started.dirs = [];
  })();
  return cleaning;
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, async () => {
    if (stoppedBy) return;
    stoppedBy = sig;
    console.error(`FAIL: resume.mjs stopped by ${sig}; cleaning up`);
    await cleanup();
    process.exit(2);
  });
}
// Last resort on any exit path (sync only): no herald left behind.
process.on("exit", () => {
  if (started.herald) started.herald.killSync();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, timeoutMs, fn, intervalMs = 100) {
  const until = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) return last;
    if (Date.now() > until) throw new CheckFailed(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${last.seen}`);
    await sleep(intervalMs);
  }
}

// ---- the herald process ----
class Herald {
  constructor(child) {
    this.child = child;
    this.exited = false;
    this.exitInfo = null;
    this.stderrTail = [];
    this.stdoutTail = [];
  }

  static start(dataDir, listen) {
    const args = ["serve", "--dev", "--data-dir", dataDir, "--listen", listen, "--retry-ms", String(RETRY_MS)];
    if (TLS_CERT) args.push("--tls-cert", TLS_CERT, "--tls-key", TLS_KEY);
    // Only this run's settings: no HERALD_* from the environment leaking in.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
    const child = spawn(HERALD_BIN, args, { stdio: ["ignore", "pipe", "pipe"], env });
    const h = new Herald(child);
    started.herald = h;
    const keep = (arr, line) => {
      arr.push(line);
      if (arr.length > 40) arr.shift();
    };
    const listening = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new CheckFailed(`herald did not print its listening line within ${STARTUP_TIMEOUT_MS} ms\n${h.tail()}`)),
        STARTUP_TIMEOUT_MS,
      );
      createInterface({ input: child.stdout }).on("line", (line) => {
        keep(h.stdoutTail, line);
        const m = /herald listening on (https?:\/\/\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      createInterface({ input: child.stderr }).on("line", (line) => keep(h.stderrTail, line));
      child.on("error", (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot run herald (${HERALD_BIN}): ${e.message}`));
      });
      child.on("exit", (code, signal) => {
        h.exited = true;
        h.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        clearTimeout(timer);
        reject(new CheckFailed(`herald exited (${h.exitInfo}) before listening\n${h.tail()}`));
      });
    });
    h.ready = listening;
    return h;
  }

  tail() {
    return `--- herald stdout (last lines) ---\n${this.stdoutTail.join("\n")}\n--- herald stderr (last lines) ---\n${this.stderrTail.join("\n")}`;
  }

  kill() {
    this.killSync();
    if (started.herald === this) started.herald = null;
  }

  killSync() {
    if (!this.exited) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  async sigkillAndWait() {
    if (this.exited) throw new CheckFailed(`herald had already exited (${this.exitInfo})\n${this.tail()}`);
    const gone = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGKILL");
    await Promise.race([gone, sleep(5_000)]);
    check(this.exited, "herald did not exit within 5 s of SIGKILL");
    if (started.herald === this) started.herald = null;
  }
}

async function startHerald(dataDir, listen) {
  // The port was just freed by a SIGKILL: retry a bind refusal for a little while.
  for (let attempt = 1; ; attempt++) {
    const h = Herald.start(dataDir, listen);
    try {
      const base = await h.ready;
      return { herald: h, base };
    } catch (e) {
      h.kill();
      const bindRefused = /cannot listen|address already in use|in use/i.test(String(e.message));
      if (!bindRefused || attempt >= 20) throw e;
      await sleep(250);
    }
  }
}

async function publish(base, data, topic = TOPIC) {
  const res = await fetch(`${base}/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topics: [topic], data }),
  });
  const text = await res.text();
  check(res.status === 200, `POST /publish answered ${res.status}: ${text}`);
  const id = JSON.parse(text).id;
  check(typeof id === "string" && id.length > 0, `POST /publish answered without an id: ${text}`);
  return id;
}

// The page lists events newest first; return them oldest first.
async function pageEvents(page) {
  const items = await page.$$eval("#events li", (lis) =>
    lis.map((li) => ({
      id: li.querySelector(".id")?.textContent ?? "",
      type: li.querySelector(".type")?.textContent ?? "",
      data: li.querySelector(".data")?.textContent ?? "",
      reset: li.classList.contains("reset"),
    })),
  );
  return items.reverse();
}

// Every EventSource request a page makes, with when and its Last-Event-ID (null: none).
function recordStreamRequests(page) {
  const requests = [];
  page.on("request", async (req) => {
    if (!new URL(req.url()).pathname.startsWith("/events")) return;
    const entry = { at: Date.now(), url: req.url(), lastEventId: undefined };
    requests.push(entry);
    try {
      entry.lastEventId = (await req.allHeaders())["last-event-id"] ?? null;
    } catch {
      entry.lastEventId = null;
    }
  });
  return requests;
}

// The protocol of every /events response the page gets, as Chromium's network stack reports it
// (the DevTools protocol's Network.responseReceived: "http/1.1", "h2").
async function recordStreamProtocols(context, page) {
  const protocols = [];
  const cdp = await context.newCDPSession(page);
  cdp.on("Network.responseReceived", (e) => {
    if (new URL(e.response.url).pathname.startsWith("/events")) protocols.push(e.response.protocol);
  });
  await cdp.send("Network.enable");
  return protocols;
}

async function pageStatus(page) {
  return (await page.textContent("#status"))?.trim();
}

async function waitForData(page, wanted, timeoutMs) {
  return waitFor(`the page to show ${JSON.stringify(wanted)}`, timeoutMs, async () => {
    const events = await pageEvents(page);
    const datas = events.map((e) => e.data);
    return { ok: wanted.every((w) => datas.includes(w)), seen: JSON.stringify(datas), events };
  });
}

async function main() {
  check(HERALD_BIN, "HERALD_BIN is not set: point it at the herald binary (cargo build -p herald-server --bin herald)");
  check(existsSync(HERALD_BIN), `HERALD_BIN=${HERALD_BIN} does not exist`);
  check(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  check(!TLS_CERT === !TLS_KEY, "set both HERALD_BROWSER_TLS_CERT and HERALD_BROWSER_TLS_KEY, or neither");

  const nonce = `${process.pid}-${Date.now()}`;
  const before = [1, 2, 3].map((i) => `before-${i}-${nonce}`);
  const after = [1, 2, 3].map((i) => `after-${i}-${nonce}`);
  const all = [...before, ...after];

  const dataDir = mkdtempSync(join(tmpdir(), "herald-browser-data-"));
  started.dirs.push(dataDir);

  // 1. herald on a free port
  let { herald, base } = await startHerald(dataDir, "127.0.0.1:0");
  const listen = new URL(base).host;
  log(`herald listening on ${base} (data dir ${dataDir})`);

  // 2. the page in a real chromium
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    timeout: 30_000,
  });
  started.browser = browser;
  log(`chromium ${browser.version()} started`);
  // The test certificate's CA is not in chromium's store; node's requests do check it.
  const context = await browser.newContext({ ignoreHTTPSErrors: Boolean(TLS_CERT) });
  const page = await context.newPage();
  const streamProtocols = await recordStreamProtocols(context, page);
  page.on("console", (m) => log(`page console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log(`page error: ${e.message}`));

  // Every EventSource request the page makes, with its Last-Event-ID, and every navigation.
  const streamRequests = recordStreamRequests(page);
  let navigations = 0;
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) navigations += 1;
  });

  await page.goto(`${base}/`, { waitUntil: "load", timeout: 15_000 });
  check((await page.inputValue("#topics")).trim() === TOPIC, `the page's #topics is not "${TOPIC}"`);
  await waitFor('#status to be "open"', 10_000, async () => {
    const s = await pageStatus(page);
    return { ok: s === "open", seen: s };
  });
  // A mark in the document and a record of every status the page shows from now on:
  // both tell later that the same document lived through the outage.
  await page.evaluate(() => {
    window.__heraldMark = "still the same document";
    window.__heraldStatuses = [document.getElementById("status").textContent];
    new MutationObserver(() => {
      const s = document.getElementById("status").textContent;
      if (window.__heraldStatuses[window.__heraldStatuses.length - 1] !== s) window.__heraldStatuses.push(s);
    }).observe(document.getElementById("status"), { childList: true, characterData: true, subtree: true });
  });
  log("page open, EventSource open");

  // 3. three events while the page is connected
  const beforeIds = [];
  for (const d of before) beforeIds.push(await publish(base, d));
  log(`published ${before.length} events, ids ${beforeIds.join(", ")}`);
  await waitForData(page, before, 10_000);
  const firstSeen = await pageEvents(page);
  check(
    firstSeen.map((e) => e.data).join("|") === before.join("|"),
    `before the outage the page shows ${JSON.stringify(firstSeen.map((e) => e.data))}, want ${JSON.stringify(before)}`,
  );
  const lastIdBefore = firstSeen[firstSeen.length - 1].id;
  check(lastIdBefore === beforeIds[beforeIds.length - 1], `the page's last event id is ${lastIdBefore}, published ${beforeIds.at(-1)}`);
  log(`the page received the ${before.length} events (last id ${lastIdBefore})`);

  // The quiet page: its stream starts after those events and gets none itself.
  const quiet = await context.newPage();
  quiet.on("pageerror", (e) => log(`quiet page error: ${e.message}`));
  await quiet.goto(`${base}/`, { waitUntil: "load", timeout: 15_000 });
  await quiet.fill("#topics", QUIET_TOPIC);
  const quietRequests = recordStreamRequests(quiet);
  await quiet.click("#connect");
  await waitFor(`the quiet page's stream on ${QUIET_TOPIC}`, 10_000, async () => {
    const s = await pageStatus(quiet);
    return { ok: s === "open" && quietRequests.length === 1, seen: `${s}, ${quietRequests.length} requests` };
  });
  log("quiet page open");
  // Its EventSource opens on the response head; over HTTP/2 the checkpoint (an id-only block)
  // follows in a frame of its own. Kill only once the server has written it, or the page may
  // never have had the id it is to resume from.
  await waitFor("the quiet page's checkpoint to be written", 10_000, async () => {
    const conns = (await (await fetch(`${base}/admin/connections`)).json()).connections.filter(
      (c) => !c.admin && (c.topics || []).includes(QUIET_TOPIC),
    );
    const written = conns.length === 1 && conns[0].bytes_sent > 0 && conns[0].queued_bytes === 0;
    return { ok: written, seen: JSON.stringify(conns) };
  });
  const requestsBeforeKill = streamRequests.length;

  // 4. SIGKILL, then the same port and data dir again, then three events at once
  await herald.sigkillAndWait();
  const killedAt = Date.now();
  log("herald SIGKILLed");
  ({ herald, base } = await startHerald(dataDir, listen));
  check(new URL(base).host === listen, `the restarted herald listens on ${base}, want ${listen}`);
  const restartedAt = Date.now();
  log(`herald restarted on ${base} ${restartedAt - killedAt} ms after the kill`);
  const afterIds = [];
  for (const d of after) afterIds.push(await publish(base, d));
  const publishedAfterAt = Date.now();
  const reconnectsSoFar = streamRequests.slice(requestsBeforeKill).filter((r) => r.at <= publishedAfterAt).length;
  log(`published ${after.length} more events, ids ${afterIds.join(", ")} (page stream requests since the kill so far: ${reconnectsSoFar})`);

  // 5. the page catches up by itself
  await waitFor(`the page to show all ${all.length} events`, DELIVERY_TIMEOUT_MS, async () => {
    const datas = (await pageEvents(page)).map((e) => e.data);
    return { ok: after.every((w) => datas.includes(w)), seen: JSON.stringify(datas) };
  });
  // Let any duplicate that would follow have a chance to show.
  await sleep(1_000);
  const events = await pageEvents(page);
  const datas = events.map((e) => e.data);
  for (const d of all) {
    const n = datas.filter((x) => x === d).length;
    check(n === 1, `"${d}" appears ${n} times in the page, want exactly once; page shows ${JSON.stringify(datas)}`);
  }
  check(
    datas.join("|") === all.join("|"),
    `the page shows ${JSON.stringify(datas)}, want exactly ${JSON.stringify(all)} in this order`,
  );
  const resets = events.filter((e) => e.reset || e.type !== "message");
  check(resets.length === 0, `the page got unexpected events: ${JSON.stringify(resets)}`);
  const wantIds = [...beforeIds, ...afterIds];
  check(
    events.map((e) => e.id).join("|") === wantIds.join("|"),
    `the page's event ids ${JSON.stringify(events.map((e) => e.id))} are not the published ${JSON.stringify(wantIds)}`,
  );
  const count = (await page.textContent("#count"))?.trim();
  check(count === String(all.length), `#count shows ${count}, want ${all.length}`);

  // 6. it was the browser's own EventSource that reconnected, with Last-Event-ID
  const mark = await page.evaluate(() => window.__heraldMark);
  check(mark === "still the same document", "the page was reloaded during the test");
  check(navigations === 1, `the page navigated ${navigations} times, want 1 (no reload)`);
  const statuses = await page.evaluate(() => window.__heraldStatuses);
  check(statuses.includes("connecting") || statuses.includes("closed"), `the page's status never left "open": ${JSON.stringify(statuses)}`);
  check(statuses.at(-1) === "open", `the page's status ended as ${statuses.at(-1)}, want open (history ${JSON.stringify(statuses)})`);
  check(!statuses.includes("closed"), `the page's EventSource was closed for good at some point: ${JSON.stringify(statuses)}`);
  const reconnects = streamRequests.slice(requestsBeforeKill);
  check(reconnects.length >= 1, "the page made no new /events request after the kill");
  const carrying = reconnects.filter((r) => r.lastEventId === lastIdBefore);
  check(
    carrying.length >= 1,
    `no reconnect carried Last-Event-ID ${lastIdBefore}; reconnect requests: ${JSON.stringify(reconnects)}`,
  );
  const reconnectAt = carrying[carrying.length - 1].at;
  const viaReplay = reconnectAt > publishedAfterAt;

  const connsRes = await fetch(`${base}/admin/connections`);
  const connsText = await connsRes.text();
  check(connsRes.status === 200, `GET /admin/connections answered ${connsRes.status}: ${connsText}`);
  const conns = JSON.parse(connsText).connections.filter((c) => !c.admin && (c.topics || []).includes(TOPIC));
  check(conns.length === 1, `the restarted herald has ${conns.length} subscriptions to "${TOPIC}", want the page's 1: ${connsText}`);
  check(
    conns[0].last_id === afterIds.at(-1),
    `the page's connection on the restarted herald last got ${conns[0].last_id}, want ${afterIds.at(-1)}: ${connsText}`,
  );
  check(
    conns[0].events_sent === after.length,
    `the restarted herald sent the page ${conns[0].events_sent} events, want ${after.length}: ${connsText}`,
  );

  log(`page status history: ${JSON.stringify(statuses)}; stream requests after the kill: ${reconnects.length}`);
  check(
    streamProtocols.length >= 2 && streamProtocols.every((p) => p === STREAM_PROTOCOL),
    `the page's streams came over ${JSON.stringify(streamProtocols)}, want ${STREAM_PROTOCOL} for the first one and the reconnect`,
  );

  // 7. the quiet page, cut off before it ever got an event, still gets what it missed
  const quietConns = JSON.parse(connsText).connections.filter((c) => !c.admin && (c.topics || []).includes(QUIET_TOPIC));
  check(quietConns.length === 1, `the restarted herald has ${quietConns.length} subscriptions to "${QUIET_TOPIC}", want 1: ${connsText}`);
  check(quietConns[0].events_sent === 0, `the quiet page was sent events: ${JSON.stringify(quietConns[0])}`);
  const quietRequestsBeforeCut = quietRequests.length;
  const cut = await fetch(`${base}/admin/connections/${quietConns[0].id}`, { method: "DELETE" });
  check(cut.status === 200 || cut.status === 204, `DELETE /admin/connections/${quietConns[0].id} answered ${cut.status}`);
  const quietData = `quiet-${nonce}`;
  const quietId = await publish(base, quietData, QUIET_TOPIC);
  const quietPublishedAt = Date.now();
  log(`cut the quiet page's stream, published ${quietId} to ${QUIET_TOPIC}`);
  const quietSeen = await waitForData(quiet, [quietData], DELIVERY_TIMEOUT_MS);
  const quietReconnects = quietRequests.slice(quietRequestsBeforeCut);
  check(quietReconnects.length >= 1, "the quiet page made no new /events request after its stream was cut");
  check(
    quietReconnects[0].at >= quietPublishedAt,
    `the quiet page reconnected before the publish (at ${quietReconnects[0].at}, published at ${quietPublishedAt}): ` +
      "the event came live, so this run does not show the resume",
  );
  check(
    quietReconnects[0].lastEventId === lastIdBefore,
    `the quiet page reconnected with Last-Event-ID ${JSON.stringify(quietReconnects[0].lastEventId)}, want its checkpoint ${lastIdBefore}`,
  );
  // The cut stream said why it ended (herald.closed), and nothing else came but the event.
  const notices = quietSeen.events.filter((e) => e.type === "herald.closed");
  check(
    notices.length === 1 && JSON.parse(notices[0].data).reason === "kicked",
    `the quiet page was told ${JSON.stringify(notices)} when its stream was cut, want one herald.closed "kicked"`,
  );
  const quietEvents = quietSeen.events.filter((e) => e.type !== "herald.closed");
  check(
    quietEvents.length === 1 && quietEvents[0].id === quietId && quietEvents[0].type === "message",
    `the quiet page shows ${JSON.stringify(quietEvents)}, want only ${quietId}`,
  );
  log(`the quiet page reconnected with its checkpoint ${lastIdBefore} and got ${quietId}`);

  // 8. the page's own publish form: a type typed after the page connected is shown, and JSON
  // data goes out as typed (a parse and re-serialization would round the number and re-sort
  // the keys)
  await quiet.fill("#ptopic", QUIET_TOPIC);
  await quiet.fill("#ptype", "order.typed");
  await quiet.fill("#pdata", '{"n": 12345678901234567890, "b": 1, "2": 0}');
  await quiet.click("#publish");
  const typed = '{"n":12345678901234567890,"b":1,"2":0}';
  const formSeen = await waitForData(quiet, [typed], DELIVERY_TIMEOUT_MS);
  const formEvents = formSeen.events.filter((e) => e.data === typed);
  check(
    formEvents.length === 1 && formEvents[0].type === "order.typed",
    `the page's own publish shows as ${JSON.stringify(formEvents)}, want one order.typed event`,
  );
  const published = (await quiet.textContent("#presult"))?.trim() ?? "";
  check(published === `published ${formEvents[0].id}`, `the publish form says ${JSON.stringify(published)}`);
  log(`the page published ${formEvents[0].id} of a type typed after it connected, its JSON as typed`);
  console.log(
    `PASS: chromium (streams over ${STREAM_PROTOCOL}) reconnected by itself (Last-Event-ID ${lastIdBefore}, ${reconnects.length} retr${reconnects.length === 1 ? "y" : "ies"}, ` +
      `${viaReplay ? "after" : "before"} the 3 post-restart publishes${viaReplay ? ", so they came by replay" : ""}) ` +
      `and showed all ${all.length} events exactly once, in order; a page that never got an event resumed from its checkpoint; ` +
      `in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
}

const deadline = setTimeout(async () => {
  console.error(`FAIL: resume.mjs did not finish within ${DEADLINE_MS} ms`);
  if (started.herald) console.error(started.herald.tail());
  await cleanup();
  process.exit(1);
}, DEADLINE_MS);

try {
  await main();
  clearTimeout(deadline);
  await cleanup();
  process.exit(0);
} catch (e) {
  clearTimeout(deadline);
  if (stoppedBy) {
    // The signal handler reports, cleans up and exits; this error is only its echo.
    await cleanup();
    await sleep(10_000);
  }
  if (e instanceof CheckFailed) {
    console.error(`FAIL: ${e.message}`);
  } else {
    console.error(`FAIL: error: ${e && e.stack ? e.stack : e}`);
  }
  if (started.herald) console.error(started.herald.tail());
  await cleanup();
  process.exit(1);
}

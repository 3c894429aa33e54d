// voicetrain studio: plain JS, no dependencies, nothing fetched from elsewhere.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const k of kids) e.append(k);
  return e;
};

// ------------------------------------------------------------------ API
let apiKey = localStorage.getItem("voicetrain-studio-key") || "";
if (document.body.dataset.needsKey === "true" && !apiKey) {
  apiKey = prompt("This studio needs its API key (given with --api-key):") || "";
  localStorage.setItem("voicetrain-studio-key", apiKey);
}
const withKey = (url) => (apiKey ? url + (url.includes("?") ? "&" : "?") + "key=" + encodeURIComponent(apiKey) : url);

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (apiKey) headers["X-API-Key"] = apiKey;
  let body = opts.body;
  if (body !== undefined && !(body instanceof Blob) && typeof body !== "string") {
    body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, { method: opts.method || (body !== undefined ? "POST" : "GET"), headers, body });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${detail}`);
  }
  if (opts.raw) return r;
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

function toast(msg, isError = false) {
  const t = $("#toast");
  t.textContent = msg;
  t.className = isError ? "error" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), isError ? 9000 : 3500);
}
const guard = (fn) => async (...args) => { try { await fn(...args); } catch (e) { toast(e.message, true); } };

// ------------------------------------------------------------------ screens
let screen = "record";
function show(name) {
  screen = name;
  for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== "screen-" + name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.screen === name);
  ({ record: loadTakes, enough: loadEnough, train: loadTrain, listen: loadListen, keep: loadKeep })[name]();
}
for (const b of document.querySelectorAll("#tabs button")) b.onclick = guard(() => show(b.dataset.screen));

// ------------------------------------------------------------------ record
let prompts = [], current = 0, recorder = null, monitor = null;

async function loadPrompts(keepId) {
  const r = await api("/api/prompts");
  prompts = r.prompts;
  $("#prompt-source").textContent = r.source === "arctic" ? "ARCTIC prompts" : "your prompts";
  const want = keepId || localStorage.getItem("voicetrain-studio-prompt");
  const at = prompts.findIndex((p) => p.id === want);
  // resume where the speaker stopped: the saved prompt, else the first one without a take
  current = at >= 0 ? at : Math.max(0, prompts.findIndex((p) => !p.take));
  renderPrompt();
}

function renderPrompt() {
  const p = prompts[current];
  if (!p) { $("#prompt-text").textContent = "No prompts."; return; }
  localStorage.setItem("voicetrain-studio-prompt", p.id);
  $("#prompt-pos").textContent = `${current + 1} / ${prompts.length}`;
  $("#prompt-id").textContent = p.id;
  $("#prompt-text").textContent = p.text;
  renderVerdict(takesById[p.id]);
}

let takesById = {};
function verdictLine(v) {
  if (!v) return el("span", { className: "status-checking", textContent: "checking…" });
  const span = el("span", { className: "status-" + v.status, textContent: v.status });
  return span;
}
function reasons(v) {
  if (!v) return "";
  return v.issues.map((i) => `${i.code}: ${i.message.replace(/^[^:]*: /, "")}`).join(" · ");
}
function renderVerdict(t) {
  const box = $("#take-verdict");
  box.innerHTML = "";
  if (!t) { box.append(el("span", { className: "muted", textContent: "not recorded yet" })); return; }
  box.append(verdictLine(t.verdict));
  if (t.verdict) {
    const m = t.verdict.measures || {};
    const bits = [];
    if (m.speech_seconds !== undefined) bits.push(`${m.speech_seconds} s of speech`);
    if (m.snr_db !== undefined) bits.push(`SNR ${m.snr_db} dB`);
    if (m.heard !== undefined) bits.push(`heard: “${m.heard}”`);
    box.append(el("span", { className: "muted", textContent: "  " + bits.join(" · ") }));
    if (t.verdict.issues.length) box.append(el("div", { className: "why", textContent: reasons(t.verdict) }));
  }
}

async function loadTakes() {
  const r = await api("/api/takes");
  takesById = {};
  for (const t of r.takes) takesById[t.id] = t;
  const body = $("#takes tbody");
  body.innerHTML = "";
  let good = 0, bad = 0;
  for (const t of r.takes) {
    const v = t.verdict;
    if (v && v.status === "bad") bad++; else if (v) good++;
    const again = el("button", { textContent: "re-record", className: "rerecord" });
    // blur: a focused button would also take the Space that stops the recording as a click
    again.onclick = guard(async (e) => { e.currentTarget.blur(); goTo(t.id); await startRecording(); });
    const play = el("button", { textContent: "▶" });
    play.onclick = () => new Audio(withKey(`/api/takes/${t.id}/audio?t=${Date.now()}`)).play();
    const tr = el("tr", {}, el("td", { textContent: t.id }), el("td", { textContent: t.text }),
      el("td", {}, verdictLine(v)), el("td", { className: "why", textContent: reasons(v) }), el("td", {}, play, again));
    tr.dataset.take = t.id;
    tr.dataset.status = v ? v.status : "checking";
    body.append(tr);
  }
  $("#takes-summary").textContent = `${r.takes.length} recorded, ${good} usable, ${bad} to re-record`;
  if (prompts.length) renderVerdict(takesById[prompts[current].id]);
}

function goTo(id) {
  const i = prompts.findIndex((p) => p.id === id);
  if (i >= 0) { current = i; renderPrompt(); }
}

// Audio capture: a fresh microphone stream per take (no echo cancellation, noise suppression or automatic
// gain: those would change the voice the model learns), 16-bit PCM WAV encoded here.
async function openMic() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: {
    echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  let peakHold = 0;
  proc.onaudioprocess = (e) => {
    const x = e.inputBuffer.getChannelData(0);
    if (mic.capturing) {
      chunks.push(new Float32Array(x));
      mic.seconds += x.length / ctx.sampleRate;
      // how much this take holds so far: shown beside the meter (and read by the browser test, which stops
      // each take once the spoken file is in it, rather than after a wall-clock guess)
      document.body.dataset.captured = mic.seconds.toFixed(2);
      $("#take-seconds").textContent = `● ${mic.seconds.toFixed(1)} s`;
    }
    let peak = 0, sum = 0;
    for (let i = 0; i < x.length; i++) { const a = Math.abs(x[i]); if (a > peak) peak = a; sum += x[i] * x[i]; }
    peakHold = Math.max(peak, peakHold * 0.95);
    drawMeter(Math.sqrt(sum / x.length), peakHold);
  };
  src.connect(proc);
  proc.connect(ctx.destination);
  const mic = { stream, ctx, chunks, capturing: false, seconds: 0,
    async close() { stream.getTracks().forEach((t) => t.stop()); proc.disconnect(); await ctx.close(); drawMeter(0, 0); } };
  return mic;
}

function drawMeter(rms, peak) {
  const c = $("#meter"), g = c.getContext("2d");
  const db = (v) => (v > 0 ? 20 * Math.log10(v) : -100);
  const w = (v) => Math.max(0, Math.min(1, (db(v) + 60) / 60)) * c.width;
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = peak >= 0.99 ? "#dc2626" : db(rms) < -45 ? "#9ca3af" : "#22c55e";
  g.fillRect(0, 0, w(rms), c.height);
  g.fillStyle = "#fbbf24";
  g.fillRect(w(peak) - 2, 0, 3, c.height);
  $("#meter-label").textContent = peak >= 0.99 ? "level: CLIPPING, turn the input gain down"
    : rms > 0 ? `level: ${db(rms).toFixed(0)} dBFS (peak ${db(peak).toFixed(0)})` : "level: –";
}

function encodeWav(chunks, rate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const buf = new ArrayBuffer(44 + 2 * n), v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  str(36, "data"); v.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (let i = 0; i < c.length; i++, o += 2) {
    const s = Math.max(-1, Math.min(1, c[i]));
    v.setInt16(o, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buf], { type: "audio/wav" });
}

async function startRecording() {
  if (recorder) return;
  if (monitor) { await monitor.close(); monitor = null; $("#btn-mic").textContent = "Test microphone"; }
  recorder = await openMic();
  document.body.dataset.captured = "0";
  recorder.capturing = true;
  recorder.prompt = prompts[current].id;
  $("#btn-record").disabled = true;
  $("#btn-stop").disabled = false;
  document.body.dataset.recording = "true";
}

async function stopRecording() {
  if (!recorder) return;
  const r = recorder;
  recorder = null;
  r.capturing = false;
  const rate = r.ctx.sampleRate;
  await r.close();
  $("#btn-record").disabled = false;
  $("#btn-stop").disabled = true;
  document.body.dataset.recording = "false";
  $("#take-seconds").textContent = "";
  const wav = encodeWav(r.chunks, rate);
  const id = r.prompt;
  takesById[id] = { id, verdict: null };
  const p = prompts.find((q) => q.id === id);
  if (p) p.take = "checking";
  // move on at once; the verdict arrives while the next prompt is being read
  if (prompts[current].id === id && current < prompts.length - 1) { current++; }
  renderPrompt();
  upload(id, wav);
}

const pending = new Set();
async function upload(id, wav) {
  pending.add(id);
  document.body.dataset.pending = String(pending.size);
  try {
    const r = await api(`/api/takes/${encodeURIComponent(id)}`, { method: "POST", body: wav, headers: { "Content-Type": "audio/wav" } });
    const p = prompts.find((q) => q.id === id);
    if (p) p.take = r.verdict.status;
    if (r.verdict.status === "bad") toast(`${id}: ${reasons(r.verdict)}`, true);
  } catch (e) {
    toast(`${id}: ${e.message}`, true);
  } finally {
    pending.delete(id);
    document.body.dataset.pending = String(pending.size);
    await loadTakes();
  }
}

async function toggleMonitor() {
  if (recorder) return;
  if (monitor) { await monitor.close(); monitor = null; $("#btn-mic").textContent = "Test microphone"; return; }
  monitor = await openMic();
  $("#btn-mic").textContent = "Stop test";
}

function step(d) { if (recorder) return; current = Math.max(0, Math.min(prompts.length - 1, current + d)); renderPrompt(); }
function playTake() {
  const p = prompts[current];
  if (p && takesById[p.id]) new Audio(withKey(`/api/takes/${p.id}/audio?t=${Date.now()}`)).play();
}

$("#btn-record").onclick = guard(startRecording);
$("#btn-stop").onclick = guard(stopRecording);
$("#btn-retake").onclick = guard(async () => { if (recorder) await stopRecording(); step(0); await startRecording(); });
$("#btn-next").onclick = () => step(1);
$("#btn-prev").onclick = () => step(-1);
$("#btn-play").onclick = playTake;
$("#btn-mic").onclick = guard(toggleMonitor);
document.addEventListener("keydown", guard(async (e) => {
  if (screen !== "record" || ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) return;
  const k = e.key;
  if (k === " ") { e.preventDefault(); recorder ? await stopRecording() : await startRecording(); }
  else if (k === "r" || k === "R") await startRecording();
  else if (k === "s" || k === "S") await stopRecording();
  else if (k === "t" || k === "T") { if (!recorder) { step(-0); await startRecording(); } }
  else if (k === "n" || k === "N" || k === "ArrowRight") step(1);
  else if (k === "p" || k === "P" || k === "ArrowLeft") step(-1);
  else if (k === "l" || k === "L") playTake();
  else if (k === "m" || k === "M") await toggleMonitor();
}));
$("#prompt-file").onchange = guard(async (e) => {
  const f = e.target.files[0];
  if (!f) return;
  const r = await api("/api/prompts", { method: "POST", body: f, headers: { "Content-Type": "text/plain", "X-Filename": f.name } });
  toast(`${r.count} prompts loaded`);
  await loadPrompts();
});
$("#btn-arctic").onclick = guard(async () => { await api("/api/prompts/arctic", { method: "POST" }); await loadPrompts(); });
$("#btn-speaker").onclick = guard(async () => { await api("/api/settings", { body: { speaker: $("#speaker").value } }); toast("saved"); });

// ------------------------------------------------------------------ enough
async function loadEnough() {
  const r = await api("/api/enough");
  const f = $("#enough-figures");
  f.innerHTML = "";
  const fig = (label, value) => f.append(el("div", {}, el("b", { textContent: value }), label));
  fig("minutes of usable speech", r.minutes.toFixed(1));
  fig("usable takes", r.good_takes);
  fig("to re-record", r.bad_takes);
  fig("phoneme coverage", r.coverage === null ? "–" : `${Math.round(100 * r.coverage)}% (${r.phonemes_covered}/${r.phonemes_total})`);
  $("#enough-advice").textContent = "At this amount: " + r.advice;
  const m = $("#enough-missing");
  m.innerHTML = "";
  if (r.missing_phonemes.length) {
    m.append(el("p", { textContent: "Not yet covered: " + r.missing_phonemes.join(" ") }));
    const ul = el("ul");
    for (const s of r.suggested_prompts) {
      const li = el("li", { textContent: `${s.id}: ${s.text} (adds ${s.adds.join(" ")})` });
      li.style.cursor = "pointer";
      li.onclick = () => { show("record"); goTo(s.id); };
      ul.append(li);
    }
    m.append(el("p", { textContent: "Record these next:" }), ul);
  }
  // what the shipped measured curve (data/enough.py) says a run reaches at this many minutes
  const body = $("#enough-reach tbody");
  body.innerHTML = "";
  const x = r.reach;
  $("#enough-reach-at").textContent = x ? `at ${x.measured_minutes} min of audio` + (x.below_measured ? " (more than you have)" : "") : "";
  $("#enough-source").textContent = x ? "Source: " + x.source : "";
  const signed = (v, d) => (v >= 0 ? "+" : "") + v.toFixed(d);
  for (const row of x ? x.rows : []) {
    const tr = el("tr", {}, el("td", { textContent: row.run === "finetune" ? "fine-tune the shipped base" : "train from scratch" }),
      el("td", { textContent: `${row.audio_minutes} min audio, ${row.train_minutes} min training` }),
      el("td", { textContent: `${row.cer_ratio.toFixed(2)}x` }), el("td", { textContent: signed(row.similarity_gap, 3) }),
      el("td", { textContent: signed(row.dnsmos_gap, 2) }));
    tr.dataset.run = row.run;
    tr.title = row.text;
    body.append(tr);
  }
}

// ------------------------------------------------------------------ train
let liveRun = null, poller = null, estimated = null;

function trainBody() {
  const settings = $("#settings").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const num = (v) => (v === "" ? null : Number(v));
  return { mode: document.querySelector("input[name=mode]:checked").value, preset: $("#preset").value,
           max_minutes: num($("#max-minutes").value), max_steps: num($("#max-steps").value), settings };
}
const formKey = () => $("#run-name").value + JSON.stringify(trainBody());
for (const id of ["#run-name", "#preset", "#max-minutes", "#max-steps", "#settings"]) $(id).addEventListener("input", () => { $("#btn-start").disabled = estimated !== formKey(); });
for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", () => { $("#btn-start").disabled = estimated !== formKey(); });

async function loadTrain() {
  const o = await api("/api/train/options");
  $("#mode-finetune").disabled = !o.finetune_available;
  $("#finetune-note").textContent = o.finetune_available ? `More settings when fine-tuning: only ${o.finetune_settings.join(", ")}.` :
    "No shipped base model in this install: fine-tuning is not available here (train from scratch, or use `voicetrain finetune --from RUN` on the command line).";
  const r = await api("/api/runs");
  const ul = $("#run-list");
  ul.innerHTML = "";
  for (const run of r.runs) {
    const li = el("li", { textContent: `${run.name} — ${run.job ? run.job.status : "?"}` });
    li.dataset.run = run.name;
    li.onclick = () => watch(run.name);
    ul.append(li);
    if (!liveRun || (run.job && ["running", "stopping"].includes(run.job.status))) liveRun = run.name;
  }
  if (liveRun) watch(liveRun);
}

$("#btn-estimate").onclick = guard(async () => {
  const name = $("#run-name").value;
  await api(`/api/runs/${encodeURIComponent(name)}/estimate`, { body: trainBody() });
  $("#estimate").textContent = "measuring…";
  const key = formKey();
  watch(name, (job) => {
    if (job.kind === "estimate" && job.status === "estimated" && job.estimate) {
      const e = job.estimate;
      $("#estimate").innerHTML = "";
      const eta = e.eta_minutes < 1 ? `${Math.round(e.eta_minutes * 60)} s` : `${e.eta_minutes.toFixed(1)} min`;
      $("#estimate").append(el("b", { textContent: `ETA ${eta} for ${e.steps} steps` }),
        el("div", { textContent: `${e.seconds_per_step.toFixed(2)} s/step · ${e.samples_per_second.toFixed(1)} samples/s · peak memory ${e.peak_rss_mb} MB` }),
        el("div", { className: "muted", textContent: e.note || "" }));
      estimated = key;
      $("#btn-start").disabled = estimated !== formKey();
    } else if (job.status === "failed") {
      $("#estimate").textContent = "estimate failed: " + job.message;
    }
  });
});
$("#btn-start").onclick = guard(async () => {
  const name = $("#run-name").value;
  await api(`/api/runs/${encodeURIComponent(name)}/start`, { body: trainBody() });
  watch(name);
});
$("#btn-pause").onclick = guard(async () => { await api(`/api/runs/${liveRun}/pause`, { method: "POST" }); });
$("#btn-stop-run").onclick = guard(async () => { await api(`/api/runs/${liveRun}/stop`, { method: "POST" }); });
$("#btn-resume").onclick = guard(async () => { await api(`/api/runs/${liveRun}/resume`, { method: "POST" }); watch(liveRun); });

let onJob = null;
function watch(name, cb) {
  liveRun = name;
  if (cb) onJob = cb;
  clearInterval(poller);
  const tick = guard(async () => {
    const r = await api(`/api/runs/${encodeURIComponent(name)}`);
    renderRun(r);
    if (onJob && r.job) onJob(r.job);
    if (!r.job || !["running", "stopping"].includes(r.job.status)) { clearInterval(poller); poller = null; }
  });
  tick();
  poller = setInterval(tick, 1000);  // a local app: reading the run folder once a second costs little
}

function renderRun(r) {
  $("#live-run").textContent = r.name;
  const j = r.job || {};
  const status = j.status === "running" ? `${j.status}: ${j.phase}` : j.status || "–";
  $("#live-status").textContent = status;
  document.body.dataset.runStatus = j.status || "";
  $("#live-message").textContent = j.message || "";
  for (const li of document.querySelectorAll("#run-list li")) if (li.dataset.run === r.name) li.textContent = `${r.name} — ${j.status || "?"}`;
  if (r.job && !document.querySelector(`#run-list li[data-run="${r.name}"]`)) {
    const li = el("li", { textContent: `${r.name} — ${j.status}` });
    li.dataset.run = r.name;
    li.onclick = () => watch(r.name);
    $("#run-list").append(li);
  }
  $("#btn-pause").disabled = $("#btn-stop-run").disabled = j.status !== "running" || j.kind !== "train";
  $("#btn-resume").disabled = !["paused", "stopped", "interrupted", "failed"].includes(j.status) || j.kind !== "train";
  drawLoss(r.curves);
  const f = $("#live-figures");
  f.innerHTML = "";
  const fig = (label, v) => f.append(el("div", {}, el("b", { textContent: v }), label));
  const last = (k) => (r.latest[k] ? r.latest[k][1] : null);
  const fmt = (v, d = 3) => (v === null ? "–" : v.toFixed(d));
  fig("step", r.latest["train/loss"] ? r.latest["train/loss"][0] : "–");
  fig("train loss", fmt(last("train/loss")));
  fig("validation loss", fmt(last("val/loss")));
  fig("quality score", fmt(last("quality/score")));
  const h = $("#health");
  h.innerHTML = "";
  for (const w of r.health) h.append(el("li", { textContent: `step ${w.step}: ${w.message}` }));
  if (!r.health.length) h.append(el("li", { className: "muted", textContent: "no warnings" }));
  const s = $("#samples");
  const key = JSON.stringify(r.samples);
  if (s.dataset.key !== key) {
    s.dataset.key = key;
    s.innerHTML = "";
    $("#samples-step").textContent = r.samples.step === null ? "(none yet)" : `(step ${r.samples.step})`;
    for (const file of r.samples.files) {
      s.append(el("div", {}, el("span", { className: "muted", textContent: file.split("/").pop() + " " }),
        el("audio", { controls: true, src: withKey(`/api/runs/${r.name}/files/${file}`), className: "sample" })));
    }
  }
  $("#log").textContent = r.log;
}

function drawLoss(curves) {
  const c = $("#loss-chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const series = [["train/loss", "#2563eb"], ["val/loss", "#dc2626"]];
  const pts = series.flatMap(([k]) => curves[k] || []);
  g.fillStyle = "#6b7280";
  g.font = "12px system-ui";
  if (!pts.length) { g.fillText("the loss curves appear after the first logged steps", 12, 20); return; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-6);
  const L = 48, B = 22, W = c.width - L - 10, H = c.height - B - 10;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * W, Y = (y) => 10 + (1 - (y - y0) / (y1 - y0)) * H;
  g.strokeStyle = "#e5e7eb";
  g.strokeRect(L, 10, W, H);
  g.fillText(y1.toFixed(2), 4, 16); g.fillText(y0.toFixed(2), 4, 10 + H); g.fillText(`step ${x0}`, L, c.height - 6);
  g.fillText(`${x1}`, L + W - 30, c.height - 6);
  series.forEach(([k, color], i) => {
    const p = curves[k] || [];
    g.strokeStyle = color; g.fillStyle = color; g.lineWidth = 2;
    g.beginPath();
    p.forEach(([x, y], j) => (j ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
    if (p.length === 1) g.fillRect(X(p[0][0]) - 2, Y(p[0][1]) - 2, 5, 5);
    g.fillText(k, L + 8 + i * 90, 24);
  });
  c.dataset.points = String(pts.length);
}

// ------------------------------------------------------------------ listen
async function runNames() { return (await api("/api/runs")).runs.filter((r) => r.checkpoints.length); }

async function fillRunSelect(sel, runs) {
  const was = sel.value;
  sel.innerHTML = "";
  for (const r of runs) sel.append(el("option", { value: r.name, textContent: r.name }));
  if (runs.some((r) => r.name === was)) sel.value = was;
}

async function loadListen() {
  const runs = await runNames();
  await fillRunSelect($("#listen-run"), runs);
  const ab = [];
  for (const r of runs) for (const c of r.checkpoints) ab.push([r.name, c]);
  for (const sel of [$("#ab-a"), $("#ab-b")]) {
    const was = sel.value;
    sel.innerHTML = "";
    for (const [r, c] of ab) sel.append(el("option", { value: `${r}|${c}`, textContent: `${r} · ${c}` }));
    if (ab.some(([r, c]) => `${r}|${c}` === was)) sel.value = was;
  }
  if (ab.length > 1 && $("#ab-a").value === $("#ab-b").value) $("#ab-b").selectedIndex = ab.length - 1;
  await loadCheckpoints();
}

async function loadCheckpoints() {
  const run = $("#listen-run").value;
  const ul = $("#ckpt-list");
  ul.innerHTML = "";
  if (!run) { $("#ckpt-reason").textContent = "no run has checkpoints yet"; return; }
  const r = await api(`/api/runs/${run}/checkpoints`);
  for (const c of r.checkpoints) {
    const li = el("li", { textContent: (c === r.selected ? "★ " : "") + c, title: "mark as the voice" });
    if (c === r.selected) li.classList.add("selected");
    li.onclick = guard(async () => { await api(`/api/runs/${run}/select`, { body: { checkpoint: c } }); await loadCheckpoints(); });
    ul.append(li);
  }
  $("#ckpt-reason").textContent = r.selected ? `★ ${r.selected}: ${r.reason}` : r.reason;
}
$("#listen-run").onchange = guard(loadCheckpoints);
$("#btn-unselect").onclick = guard(async () => { await api(`/api/runs/${$("#listen-run").value}/select`, { method: "DELETE" }); await loadCheckpoints(); });

async function speak(run, checkpoint, text) {
  const r = await api("/api/synthesize", { body: { run, checkpoint, text }, raw: true });
  const blob = await r.blob();
  const a = el("audio", { controls: true, src: URL.createObjectURL(blob), className: "spoken" });
  a.dataset.checkpoint = r.headers.get("X-Checkpoint");
  return a;
}
$("#btn-speak").onclick = guard(async () => {
  const out = $("#speak-out");
  out.textContent = "speaking…";
  const a = await speak($("#listen-run").value, "best", $("#listen-text").value);
  out.innerHTML = "";
  out.append(el("span", { className: "muted", textContent: a.dataset.checkpoint + " " }), a);
  a.play().catch(() => {});
});
$("#btn-ab").onclick = guard(async () => {
  const out = $("#ab-out");
  out.textContent = "speaking…";
  const [ra, ca] = $("#ab-a").value.split("|"), [rb, cb] = $("#ab-b").value.split("|");
  const sentences = $("#listen-text").value.split(/(?<=[.!?])\s+|\n+/).map((s) => s.trim()).filter(Boolean).slice(0, 5);
  const rows = [];
  for (const s of sentences) rows.push([s, await speak(ra, ca, s), await speak(rb, cb, s)]);
  out.innerHTML = "";
  out.append(el("div", { className: "ab" }, el("b", { textContent: "sentence" }), el("b", { textContent: `A: ${ra} · ${ca}` }), el("b", { textContent: `B: ${rb} · ${cb}` })));
  for (const [s, a, b] of rows) out.append(el("div", { className: "ab" }, el("span", { textContent: s }), a, b));
});

// ------------------------------------------------------------------ keep
let keepNameTouched = false;
$("#keep-name").addEventListener("focus", () => { keepNameTouched = true; });

async function loadKeep() {
  const runs = await runNames();
  await fillRunSelect($("#keep-run"), runs);
  await loadKeepCkpts();
  if (!$("#keep-name").value && !keepNameTouched) {
    const speaker = (await api("/api/state")).speaker;
    // the user may have started typing meanwhile: a focused field is theirs (setting it between a select-all and
    // the typed text would glue the two together)
    if (!$("#keep-name").value && !keepNameTouched) $("#keep-name").value = speaker;
  }
  const r = await api("/api/voices");
  const opts = await api("/api/train/options");
  const box = $("#voices");
  box.innerHTML = "";
  if (!r.voices.length) box.append(el("p", { className: "muted", textContent: `no voices yet (store: ${r.store})` }));
  const kinds = { curl: "curl (voicetrain serve)", home_assistant: "Home Assistant (Wyoming)", piper: "Home Assistant's Piper add-on (the Piper download)" };
  for (const v of r.voices) {
    const snippets = el("div");
    for (const [kind, label] of Object.entries(kinds)) {
      if (!v.snippets[kind]) continue;
      const copy = el("button", { textContent: "Copy" });
      copy.onclick = guard(async () => { await copyText(v.snippets[kind]); toast("copied"); });
      const box = el("div", { className: "snippet" }, el("pre", { textContent: v.snippets[kind] }), copy);
      box.dataset.kind = kind;
      snippets.append(el("div", { className: "muted", textContent: label }), box);
    }
    const links = el("div", {}, el("a", { href: withKey(`/api/voices/${v.name}/${v.version}/bundle.zip`), textContent: "Download bundle" }));
    if (opts.piper_export) links.append(" · ", el("a", { href: withKey(`/api/voices/${v.name}/${v.version}/piper.zip`), textContent: "Download for Piper" }));
    const div = el("div", { className: "voice" }, el("b", { textContent: `${v.name}@${v.version}` }),
      el("span", { className: "muted", textContent: `  ${v.created} · ${v.checkpoint || ""}` }),
      el("div", { textContent: v.note || "" }), links, snippets);
    div.dataset.voice = `${v.name}@${v.version}`;
    box.append(div);
  }
}
async function loadKeepCkpts() {
  const run = $("#keep-run").value;
  const sel = $("#keep-ckpt");
  sel.innerHTML = "";
  sel.append(el("option", { value: "best", textContent: "the marked one (★)" }));
  if (!run) return;
  const r = await api(`/api/runs/${run}/checkpoints`);
  for (const c of r.checkpoints) sel.append(el("option", { value: c, textContent: c }));
}
async function copyText(text) {
  try { await navigator.clipboard.writeText(text); }
  catch (e) {  // no clipboard permission (plain http on another host): select-and-copy fallback
    const t = el("textarea", { value: text });
    document.body.append(t); t.select(); document.execCommand("copy"); t.remove();
  }
}
$("#keep-run").onchange = guard(loadKeepCkpts);
$("#btn-register").onclick = guard(async () => {
  const r = await api("/api/voices", { body: { run: $("#keep-run").value, checkpoint: $("#keep-ckpt").value,
    name: $("#keep-name").value, note: $("#keep-note").value } });
  toast(`registered ${r.name}@${r.version}`);
  await loadKeep();
});

// ------------------------------------------------------------------ start
guard(async () => {
  const s = await api("/api/state");
  $("#project").textContent = s.project;
  $("#speaker").value = s.speaker;
  await loadPrompts();
  await loadTakes();
  document.body.dataset.ready = "true";
})();

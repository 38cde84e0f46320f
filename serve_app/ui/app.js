// The /ui page: pick a voice, convert a file through /convert, or stream the microphone
// through the /stream WebSocket (AudioWorklet capture -> binary f32le blocks -> playback).
// window.rvcStats exposes the counters the browser test reads.
"use strict";

const $ = (id) => document.getElementById(id);
// The service may run under a route prefix (Serve's route_prefix, e.g. /rvc): every URL is
// relative to the folder that holds /ui.
const BASE = location.pathname.replace(/\/ui\/?$/, "/");
const url = (path) => BASE + path;
const stats = {
  blocksSent: 0, blocksReceived: 0, conversions: 0, errors: 0, outputRms: 0, maxOutputRms: 0,
  sampleRate: 0, ready: false, voices: 0,
};
window.rvcStats = stats;

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${body.error}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`;
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

async function loadVoices() {
  $("voices-status").textContent = "loading voices...";
  const response = await fetch(url("voices"), { headers: authHeaders() });
  if (!response.ok) {
    $("voices-status").textContent = await errorText(response);
    return;
  }
  const { voices } = await response.json();
  const select = $("voice");
  select.innerHTML = "";
  for (const voice of voices) {
    const option = document.createElement("option");
    option.value = voice.name;
    const usable = voice.runnable !== false;
    option.textContent = `${voice.name} (${voice.version || "?"}, ${voice.sample_rate || "?"} Hz)${usable ? "" : " - unusable"}`;
    option.disabled = !usable;
    select.appendChild(option);
  }
  $("voices-status").textContent = `${voices.length} voice(s)`;
  const health = await fetch(url("health"), { headers: authHeaders() }).then((r) => r.json()).catch(() => ({}));
  const methods = health.pitch_methods || ["pm", "harvest", "fcpe", "rmvpe"];
  const methodSelect = $("f0-method");
  methodSelect.innerHTML = "";
  for (const method of methods) {
    const option = document.createElement("option");
    option.value = option.textContent = method;
    methodSelect.appendChild(option);
  }
  methodSelect.value = methods.includes("pm") ? "pm" : methods[0];
  stats.voices = voices.length; // last: the page is ready once voices and methods are both listed
}

function conversionFields() {
  return {
    f0_up_key: $("f0-up-key").value,
    index_rate: $("index-rate").value,
    f0_method: $("f0-method").value,
  };
}

async function convertFile() {
  const file = $("file").files[0];
  if (!file) {
    $("convert-status").textContent = "choose a file first";
    return;
  }
  const form = new FormData();
  form.append("audio", file);
  form.append("voice_name", $("voice").value);
  for (const [name, value] of Object.entries(conversionFields())) form.append(name, value);
  $("convert-status").textContent = "converting...";
  const started = performance.now();
  const response = await fetch(url("convert"), { method: "POST", body: form, headers: authHeaders() });
  if (!response.ok) {
    stats.errors += 1;
    $("convert-status").textContent = await errorText(response);
    return;
  }
  const blob = await response.blob();
  const blobUrl = URL.createObjectURL(blob);
  $("result").src = blobUrl;
  $("download").href = blobUrl;
  $("download").hidden = false;
  stats.conversions += 1;
  $("convert-status").textContent = `done in ${((performance.now() - started) / 1000).toFixed(1)} s`;
}

// ---- live mode -----------------------------------------------------------------------------

let live = null;

function setLiveState(text) {
  $("live-state").textContent = text;
}

async function startLive() {
  $("live-error").textContent = "";
  const context = new AudioContext();
  await context.audioWorklet.addModule(url("ui/worklet.js"));
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false } });
  const source = context.createMediaStreamSource(stream);
  const capture = new AudioWorkletNode(context, "rvc-capture");
  const player = new AudioWorkletNode(context, "rvc-player");
  const silent = context.createGain();
  silent.gain.value = 0;
  source.connect(capture).connect(silent).connect(context.destination);
  player.connect(context.destination);

  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${url("stream")}`);
  socket.binaryType = "arraybuffer";
  const blockMs = Number($("block-ms").value);
  stats.sampleRate = context.sampleRate;
  live = { context, stream, socket, capture, player, pending: [], sentAt: [], blockSamples: 0, filled: 0, buffer: null };

  socket.onopen = () => {
    setLiveState("starting");
    const key = $("api-key").value.trim();
    socket.send(JSON.stringify({
      type: "start", voice: $("voice").value, sample_rate: context.sampleRate, sample_format: "f32le",
      block_ms: blockMs, extra_ms: Number($("extra-ms").value), crossfade_ms: 50, silence_db: -70,
      stats_every: 20, ...(key ? { api_key: key } : {}), ...conversionFields(),
    }));
  };
  socket.onmessage = (event) => {
    if (!live) return;
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.type === "ready") {
        live.blockSamples = message.settings.block_samples;
        live.buffer = new Float32Array(live.blockSamples);
        $("latency-ms").textContent = message.latency_ms.toFixed(0);
        stats.ready = true;
        setLiveState("streaming");
      } else if (message.type === "error") {
        stats.errors += 1;
        $("live-error").textContent = `${message.error}: ${message.detail}`;
      }
      return;
    }
    const block = new Float32Array(event.data);
    stats.blocksReceived += 1;
    let sum = 0;
    for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
    stats.outputRms = Math.sqrt(sum / Math.max(1, block.length));
    stats.maxOutputRms = Math.max(stats.maxOutputRms, stats.outputRms);
    $("blocks-received").textContent = stats.blocksReceived;
    $("output-rms").textContent = stats.outputRms > 0 ? (20 * Math.log10(stats.outputRms)).toFixed(1) : "-inf";
    const sentAt = live.sentAt.shift();
    if (sentAt !== undefined) $("round-trip-ms").textContent = (performance.now() - sentAt).toFixed(0);
    player.port.postMessage(block, [block.buffer]);
  };
  socket.onclose = (event) => {
    setLiveState(`closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
    stopLive();
  };

  capture.port.onmessage = (event) => {
    if (!live || !live.buffer || socket.readyState !== WebSocket.OPEN) return;
    let frames = event.data;
    while (frames.length > 0) {
      const n = Math.min(frames.length, live.blockSamples - live.filled);
      live.buffer.set(frames.subarray(0, n), live.filled);
      live.filled += n;
      frames = frames.subarray(n);
      if (live.filled === live.blockSamples) {
        socket.send(live.buffer.buffer.slice(0));
        live.sentAt.push(performance.now());
        stats.blocksSent += 1;
        $("blocks-sent").textContent = stats.blocksSent;
        live.filled = 0;
      }
    }
  };
  $("start-live").disabled = true;
  $("stop-live").disabled = false;
}

function stopLive() {
  if (!live) return;
  const { context, stream, socket } = live;
  live = null;
  stream.getTracks().forEach((track) => track.stop());
  if (socket.readyState === WebSocket.OPEN) socket.close(1000, "client stopped");
  context.close();
  $("start-live").disabled = false;
  $("stop-live").disabled = true;
}

function sendUpdate() {
  if (live && live.socket.readyState === WebSocket.OPEN) {
    live.socket.send(JSON.stringify({ type: "update", voice: $("voice").value, ...conversionFields() }));
  }
}

$("reload-voices").addEventListener("click", loadVoices);
$("convert").addEventListener("click", () => convertFile().catch((e) => { stats.errors += 1; $("convert-status").textContent = String(e); }));
$("start-live").addEventListener("click", () => startLive().catch((e) => { stats.errors += 1; $("live-error").textContent = String(e); stopLive(); }));
$("stop-live").addEventListener("click", stopLive);
for (const id of ["voice", "f0-up-key", "index-rate"]) $(id).addEventListener("change", sendUpdate);
loadVoices().catch((e) => { $("voices-status").textContent = String(e); });

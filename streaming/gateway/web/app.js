// The Sonolake live page: microphone → raw PCM16 (AudioWorklet, ~100 ms frames) or Opus
// (MediaRecorder, WebM, 100 ms timeslices) → WebSocket /v1/listen → results on the page.
// Every frame is kept until its Ack; after a dropped connection the page reconnects with its
// session_id and resume_from = the first unacknowledged seq, and resends exactly those frames
// (back-off 0.2 s doubling to 5 s). An Opus session that the gateway cannot continue (it
// restarted: the WebM header is gone, 1003) starts a new recorder in a new session.
// State is mirrored on `window.sonolake` for tooling.
"use strict";

const FRAME_MS = 100;
const state = (window.sonolake = {
  framesSent: 0, lastAck: -1, results: [], messages: 0, closed: null,
  resumes: 0, sessions: [], mode: "pcm",
});
const $ = (id) => document.getElementById(id);

let ws = null;
let audioContext = null;
let mediaStream = null;
let worklet = null;
let recorder = null;
let sampleRate = 16000;
let sessionId = null;
let resumeToken = null;
let nextSeq = 0;
let pending = []; // [seq, ArrayBuffer] sent and not acknowledged yet
let stopping = false;
let attempt = 0;
let lastError = null; // code of the last Error: a refused resume means "start a new session"
let pieces = Promise.resolve(); // MediaRecorder pieces on their way to sendFrame

function setStatus(text) {
  $("status").textContent = text;
}

function deviceId() {
  let id = localStorage.getItem("sonolake-device-id");
  if (!id) {
    id = "browser-" + Math.random().toString(36).slice(2, 10);
    localStorage.setItem("sonolake-device-id", id);
  }
  return id;
}

function listenUrl() {
  const page = new URLSearchParams(location.search);
  const query = new URLSearchParams({
    device_id: deviceId(),
    encoding: state.mode === "opus" ? "opus" : "linear16",
    sample_rate: String(sampleRate),
    channels: "1",
    interim_results: "true",
  });
  if (page.get("token")) query.set("token", page.get("token"));
  if (sessionId) {
    query.set("session_id", sessionId);
    query.set("resume_from", String(pending.length ? pending[0][0] : nextSeq));
    if (resumeToken) query.set("resume_token", resumeToken);
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/listen?${query}`;
}

function describe(result) {
  const span = `${result.start.toFixed(2)}–${(result.start + result.duration).toFixed(2)} s`;
  if (result.label === null) return { span, text: "speech (no model loaded)" };
  const alts = result.alternatives.slice(1).map((a) => `${a.label} ${a.score.toFixed(2)}`).join(", ");
  return { span, text: `${result.label} ${result.score.toFixed(2)}${alts ? " (" + alts + ")" : ""}` };
}

function onMessage(event) {
  const msg = JSON.parse(event.data);
  state.messages += 1;
  switch (msg.type) {
    case "Metadata":
      if (!msg.final) {
        if (sessionId && msg.session_id === sessionId) state.resumes += 1;
        else state.sessions.push(msg.session_id);
        sessionId = msg.session_id;
        resumeToken = msg.resume_token || resumeToken;
      }
      $("model").textContent = msg.model_loaded ? `version ${msg.model_version}` : "none loaded";
      if (msg.final) setStatus(`closed: ${msg.totals.chunks} chunks, ${msg.totals.final_results} results`);
      else setStatus(`streaming as ${msg.device_id} (session ${msg.session_id.slice(0, 8)})`);
      break;
    case "Ack":
      state.lastAck = msg.seq;
      while (pending.length && pending[0][0] <= msg.seq) pending.shift();
      $("acked").textContent = String(msg.seq);
      break;
    case "SpeechStarted":
      $("speech").classList.add("on");
      break;
    case "UtteranceEnd":
      $("speech").classList.remove("on");
      break;
    case "Results": {
      const { span, text } = describe(msg);
      if (!msg.is_final) {
        $("interim").textContent = `… ${text}`;
        break;
      }
      state.results.push(msg);
      $("interim").textContent = "";
      const item = document.createElement("li");
      item.dataset.kind = "final";
      item.innerHTML = `<span class="meta">${span}</span> <span class="label"></span>`;
      item.querySelector(".label").textContent = text;
      $("results").appendChild(item);
      break;
    }
    case "Warning":
      setStatus(`warning: ${msg.message}`);
      break;
    case "Error":
      lastError = msg.code;
      setStatus(`error: ${msg.message}`);
      break;
  }
}

function sendFrame(data) {
  pending.push([nextSeq, data]);
  nextSeq += 1;
  state.framesSent += 1;
  $("sent").textContent = String(state.framesSent);
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(data);
}

// One connection; resolves once open (the unacknowledged frames resent), rejects on failure.
function connect() {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(listenUrl());
    socket.binaryType = "arraybuffer";
    let opened = false;
    socket.onmessage = onMessage;
    socket.onopen = () => {
      opened = true;
      attempt = 0;
      ws = socket;
      for (const [, data] of pending) socket.send(data);
      if (stopping) socket.send(JSON.stringify({ type: "CloseStream" }));
      resolve();
    };
    socket.onerror = () => {
      if (!opened) reject(new Error("WebSocket connection failed"));
    };
    socket.onclose = (event) => {
      if (ws === socket) ws = null;
      if (!opened) return;
      onClosed(event);
    };
  });
}

function onClosed(event) {
  const refusedResume = lastError === "resume_refused" || lastError === "session_closed";
  lastError = null;
  if (refusedResume && !stopping) {
    if (state.mode === "opus") newOpusSession();
    else newPcmSession();
    reconnect();
    return;
  }
  const done = event.code === 1000 || event.code === 1008 || (stopping && event.code === 1001);
  if (done || (event.code === 1003 && state.mode !== "opus")) {
    state.closed = { code: event.code, reason: event.reason };
    if (event.code !== 1000) setStatus(`closed (${event.code}): ${event.reason}`);
    stopAudio();
    return;
  }
  if (event.code === 1003) newOpusSession(); // the gateway lost the stream's header
  setStatus(`connection lost (${event.code}); reconnecting…`);
  reconnect();
}

function reconnect() {
  const delay = Math.min(5000, 200 * 2 ** attempt) * (0.5 + Math.random() / 2);
  attempt += 1;
  setTimeout(() => connect().catch(reconnect), delay);
}

// The gateway does not know the session any more (it restarted): what was not acknowledged
// goes again, renumbered from 0, in a new session.
function newPcmSession() {
  sessionId = null;
  resumeToken = null;
  pending = pending.map(([, data], index) => [index, data]);
  nextSeq = pending.length;
}

function newOpusSession() {
  sessionId = null;
  resumeToken = null;
  pending = [];
  nextSeq = 0;
  if (recorder) {
    recorder.ondataavailable = null;
    recorder.stop();
    startRecorder();
  }
}

function startRecorder() {
  recorder = new MediaRecorder(mediaStream, { mimeType: "audio/webm;codecs=opus" });
  recorder.ondataavailable = (event) => {
    // a chain keeps the pieces in order (arrayBuffer() is async) and lets stop() wait for them
    pieces = pieces.then(async () => {
      if (event.data.size) sendFrame(await event.data.arrayBuffer());
    });
  };
  recorder.start(FRAME_MS);
}

async function start() {
  $("start").disabled = true;
  state.mode = $("mode").value;
  stopping = false;
  try {
    mediaStream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    if (state.mode === "opus") {
      sampleRate = 16000; // the rate the gateway stores the decoded audio at
      await connect();
      startRecorder();
    } else {
      audioContext = new AudioContext({ sampleRate: 16000 });
      await audioContext.audioWorklet.addModule("/pcm-worklet.js");
      sampleRate = audioContext.sampleRate;
      worklet = new AudioWorkletNode(audioContext, "pcm-capture", {
        processorOptions: { frameSamples: Math.round((sampleRate * FRAME_MS) / 1000) },
      });
      worklet.port.onmessage = (event) => sendFrame(event.data);
      await connect();
      audioContext.createMediaStreamSource(mediaStream).connect(worklet);
    }
    $("stop").disabled = false;
  } catch (err) {
    setStatus(`could not start: ${err.message}`);
    stopAudio();
    $("start").disabled = false;
  }
}

function stopAudio() {
  if (recorder && recorder.state !== "inactive") recorder.stop();
  recorder = null;
  if (mediaStream) mediaStream.getTracks().forEach((t) => t.stop());
  if (audioContext) audioContext.close();
  mediaStream = null;
  audioContext = null;
  worklet = null;
  $("stop").disabled = true;
  $("start").disabled = false;
}

function closeStream() {
  stopping = true;
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "CloseStream" }));
  if (mediaStream) mediaStream.getTracks().forEach((t) => t.stop());
  $("stop").disabled = true;
  setStatus("closing…");
}

function stop() {
  if (worklet) {
    worklet.port.onmessage = null; // no audio after CloseStream
    worklet.disconnect();
  }
  if (recorder && recorder.state !== "inactive") {
    recorder.onstop = () => pieces.then(closeStream); // its last piece goes out first
    recorder.stop();
    return;
  }
  closeStream();
}

const pageMode = new URLSearchParams(location.search).get("mode");
if (pageMode === "opus" || pageMode === "pcm") $("mode").value = pageMode;
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);

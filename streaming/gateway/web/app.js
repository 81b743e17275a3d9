// The Sonolake live page: microphone → AudioWorklet (PCM16, ~100 ms frames) → WebSocket
// /v1/listen → results on the page. State is mirrored on `window.sonolake` for tooling.
"use strict";

const FRAME_MS = 100;
const state = (window.sonolake = { framesSent: 0, lastAck: -1, results: [], messages: 0, closed: null });
const $ = (id) => document.getElementById(id);

let ws = null;
let audioContext = null;
let mediaStream = null;
let worklet = null;

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

function listenUrl(sampleRate) {
  const page = new URLSearchParams(location.search);
  const query = new URLSearchParams({
    device_id: deviceId(),
    encoding: "linear16",
    sample_rate: String(sampleRate),
    channels: "1",
    interim_results: "true",
  });
  if (page.get("token")) query.set("token", page.get("token"));
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
      $("model").textContent = msg.model_loaded ? `version ${msg.model_version}` : "none loaded";
      if (msg.final) setStatus(`closed: ${msg.totals.chunks} chunks, ${msg.totals.final_results} results`);
      else setStatus(`streaming as ${msg.device_id} (session ${msg.session_id.slice(0, 8)})`);
      break;
    case "Ack":
      state.lastAck = msg.seq;
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
      setStatus(`error: ${msg.message}`);
      break;
  }
}

async function start() {
  $("start").disabled = true;
  try {
    mediaStream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    audioContext = new AudioContext({ sampleRate: 16000 });
    await audioContext.audioWorklet.addModule("/pcm-worklet.js");
    const rate = audioContext.sampleRate;
    worklet = new AudioWorkletNode(audioContext, "pcm-capture", {
      processorOptions: { frameSamples: Math.round((rate * FRAME_MS) / 1000) },
    });
    ws = new WebSocket(listenUrl(rate));
    ws.binaryType = "arraybuffer";
    ws.onmessage = onMessage;
    ws.onclose = (event) => {
      state.closed = { code: event.code, reason: event.reason };
      if (event.code !== 1000) setStatus(`closed (${event.code}): ${event.reason}`);
      stopAudio();
    };
    worklet.port.onmessage = (event) => {
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(event.data);
        state.framesSent += 1;
        $("sent").textContent = String(state.framesSent);
      }
    };
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("WebSocket connection failed"));
    });
    audioContext.createMediaStreamSource(mediaStream).connect(worklet);
    $("stop").disabled = false;
  } catch (err) {
    setStatus(`could not start: ${err.message}`);
    stopAudio();
    $("start").disabled = false;
  }
}

function stopAudio() {
  if (mediaStream) mediaStream.getTracks().forEach((t) => t.stop());
  if (audioContext) audioContext.close();
  mediaStream = null;
  audioContext = null;
  worklet = null;
  $("stop").disabled = true;
  $("start").disabled = false;
}

function stop() {
  if (worklet) {
    worklet.port.onmessage = null; // no audio after CloseStream
    worklet.disconnect();
  }
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "CloseStream" }));
  if (mediaStream) mediaStream.getTracks().forEach((t) => t.stop());
  $("stop").disabled = true;
  setStatus("closing…");
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);

// The captioning page: pick or drop an image, POST it to /caption, show what comes back.
"use strict";

const MAP_SIZE = 160;   // the longer side of each attention panel, in CSS pixels
const OVERLAY = 0.6;    // opacity of the attention overlay (as notebook 03's)
const $ = (id) => document.getElementById(id);
let current = null;     // the File being shown
let request = 0;        // answers to older requests are dropped

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

async function loadHealth() {
  let maxBeam = 8;
  try {
    const health = await (await fetch("/health")).json();
    const model = health.model || {};
    maxBeam = health.settings.max_beam;
    const data = health.dataset ? `, trained on ${health.dataset}` : "";
    $("release").textContent = `Release ${health.release}: ${model.encoder} encoder, ` +
      `${model.cell} decoder (${model.conditioning})${data}.`;
  } catch (error) {
    $("release").textContent = "The server did not say which release it serves.";
  }
  const shown = Math.min(3, maxBeam);  // the three best beams, by default
  for (const id of ["beam", "top"]) {
    for (let k = 1; k <= maxBeam; k++) $(id).add(new Option(String(k), String(k), false, k === shown));
  }
}

function pick(file) {
  if (!file) return;
  current = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  send();
}

async function send() {
  if (!current) return;
  const mine = ++request;
  const top = Number($("top").value);
  const beam = Math.max(Number($("beam").value), top);
  const form = new FormData();
  form.append("image", current, current.name);
  $("error").hidden = true;
  $("status").textContent = `Captioning ${current.name}\u2026`;
  let response, body;
  try {
    response = await fetch(`/caption?beam=${beam}&top=${top}`, {method: "POST", body: form});
    body = await response.json();
  } catch (error) {
    if (mine === request) showError(`The server did not answer (${error.message}).`);
    return;
  }
  if (mine !== request) return;
  if (!response.ok) {
    $("result").hidden = true;
    showError(body.error || `HTTP ${response.status}`);
    return;
  }
  $("status").textContent = "";
  show(body);
}

function show(result) {
  $("result").hidden = false;
  $("caption").textContent = result.caption;
  $("score").textContent = `score ${result.score.toFixed(4)} (length-normalised log-probability)`;
  const rows = $("beams").tBodies[0];
  rows.replaceChildren();
  result.alternatives.forEach((beam, index) => {
    const row = rows.insertRow();
    if (index === 0) row.className = "best";
    row.insertCell().textContent = String(index + 1);
    row.insertCell().textContent = beam.caption;
    const score = row.insertCell();
    score.className = "score";
    score.textContent = beam.score.toFixed(4);
  });
  $("maps").replaceChildren();
  $("attention").hidden = !result.attention;
  if (result.attention) {
    const image = $("preview");
    const draw = () => drawAttention(image, result);
    if (image.complete && image.naturalWidth) draw(); else image.addEventListener("load", draw, {once: true});
  }
}

// Notebook 03's colour map: matplotlib's "jet", from blue (0) to red (1).
function jet(t) {
  const channel = (shift) => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - shift))));
  return [channel(3), channel(2), channel(1)];
}

function drawAttention(image, result) {
  const [rows, cols] = result.attention_grid;
  const scale = MAP_SIZE / Math.max(image.naturalWidth, image.naturalHeight);
  const width = Math.round(image.naturalWidth * scale);
  const height = Math.round(image.naturalHeight * scale);
  result.words.forEach((word, index) => {
    const weights = result.attention[index];
    const low = Math.min(...weights), high = Math.max(...weights);
    const grid = document.createElement("canvas");
    grid.width = cols;
    grid.height = rows;
    const cells = grid.getContext("2d").createImageData(cols, rows);
    weights.forEach((weight, region) => {
      const [r, g, b] = jet(high > low ? (weight - low) / (high - low) : 0);
      cells.data.set([r, g, b, 255], region * 4);
    });
    grid.getContext("2d").putImageData(cells, 0, 0);
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0, width, height);
    context.globalAlpha = OVERLAY;
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(grid, 0, 0, width, height);
    const panel = document.createElement("figure");
    panel.className = "map";
    const label = document.createElement("figcaption");
    label.textContent = word;
    panel.append(canvas, label);
    $("maps").append(panel);
  });
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => pick(event.target.files[0]));
  for (const id of ["beam", "top"]) $(id).addEventListener("change", send);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    pick(event.dataTransfer.files[0]);
  });
  loadHealth();
}

document.addEventListener("DOMContentLoaded", setUp);

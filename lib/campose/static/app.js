// The campose dashboard: draws the plan from GET /plan, sends a photo to POST /predict and marks the pose.
// Plan coordinates are metres in the building frame (x east, y north); the SVG draws (x, -y) so north is up.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const HEADING_M = 1.8; // length of the heading arrows, metres
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 2) => Number(v).toFixed(d);

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function setStatus(text, state) {
  const s = $("status");
  s.textContent = text;
  s.dataset.state = state;
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

let planBox = null; // [xmin, ymin, xmax, ymax] of the plan, metres

// Show the plan and the given points (metres), with a margin.
function fitView(points) {
  const pad = 1.0;
  let [x0, y0, x1, y1] = planBox;
  for (const p of points) {
    x0 = Math.min(x0, p.x); y0 = Math.min(y0, p.y); x1 = Math.max(x1, p.x); y1 = Math.max(y1, p.y);
  }
  $("plan").setAttribute("viewBox", `${x0 - pad} ${-(y1 + pad)} ${x1 - x0 + 2 * pad} ${y1 - y0 + 2 * pad}`);
}

function drawPlan(plan) {
  const [[x0, y0], [x1, y1]] = plan.bounds;
  planBox = [x0, y0, x1, y1];
  fitView([]);
  const root = $("plan");
  const spaces = $("plan-spaces");
  for (const s of plan.spaces) {
    const pts = s.polygon.map(([x, y]) => `${x},${-y}`).join(" ");
    const poly = svg("polygon", { points: pts, class: s.walkable ? "walkable" : "blocked" }, spaces);
    svg("title", {}, poly).textContent = `${s.name} (${s.kind})`;
  }
  const [wx0, wx1, wy0, wy1] = plan.walkable.extent;
  const img = $("plan-walkable");
  const place = { href: plan.walkable.image, x: wx0, y: -wy1, width: wx1 - wx0, height: wy1 - wy0 };
  for (const [k, v] of Object.entries(place)) img.setAttribute(k, v);
  const walls = $("plan-walls");
  plan.segments.forEach(([ax, ay, bx, by], i) => {
    svg("line", { x1: ax, y1: -ay, x2: bx, y2: -by, class: plan.segment_kinds[i] }, walls);
  });
  root.dataset.state = "ready";
}

// Put a marker's circle at p and its heading arrow towards yawDeg; returns the arrow's tip (metres).
function placeMarker(group, p, yawDeg) {
  const a = (yawDeg * Math.PI) / 180;
  const tip = { x: p.x + HEADING_M * Math.cos(a), y: p.y + HEADING_M * Math.sin(a) };
  const line = group.querySelector("line");
  line.setAttribute("x1", p.x);
  line.setAttribute("y1", -p.y);
  line.setAttribute("x2", tip.x);
  line.setAttribute("y2", -tip.y);
  const c = group.querySelector("circle");
  c.setAttribute("cx", p.x);
  c.setAttribute("cy", -p.y);
  return tip;
}

function showPrediction(r, roundTripMs) {
  const yaw = r.orientation.yaw_deg;
  const tips = [placeMarker($("marker-raw"), r.position, yaw),
                placeMarker($("marker-snapped"), r.snapped_position, yaw)];
  const link = $("marker-link");
  link.setAttribute("x1", r.position.x);
  link.setAttribute("y1", -r.position.y);
  link.setAttribute("x2", r.snapped_position.x);
  link.setAttribute("y2", -r.snapped_position.y);
  fitView([r.position, r.snapped_position, ...tips]);
  const m = $("marker");
  m.dataset.snapped = String(r.snapped);
  m.dataset.state = "shown";
  m.setAttribute("visibility", "visible");
  m.parentNode.appendChild(m); // draw on top

  const p = r.position, s = r.snapped_position, q = r.orientation.quaternion;
  $("n-position").textContent = `x ${fmt(p.x)}, y ${fmt(p.y)}, z ${fmt(p.z)}`;
  $("n-snapped").textContent = `x ${fmt(s.x)}, y ${fmt(s.y)}, z ${fmt(s.z)}`;
  $("n-snap").textContent = r.snapped ? `moved ${fmt(r.snap_distance_m)} m onto the walkable floor`
                                      : "on the walkable floor: not moved";
  $("n-yaw").textContent = `${fmt(yaw, 1)}° (counter-clockwise from east)`;
  $("n-pitch-roll").textContent = `${fmt(r.orientation.pitch_deg, 1)}°, ${fmt(r.orientation.roll_deg, 1)}°`;
  $("n-quat").textContent = [q.w, q.x, q.y, q.z].map((v) => fmt(v, 4)).join(", ");
  $("n-image").textContent = `${r.image.width}×${r.image.height} ${r.image.format} (${r.image.mode}), ` +
                             `network input ${r.model_input[0]}×${r.model_input[1]}`;
  $("n-time").textContent = `network ${fmt(r.inference_ms, 1)}, decoding ${fmt(r.decode_ms, 1)}, ` +
                            `server ${fmt(r.total_ms, 1)}, round trip ${fmt(roundTripMs, 0)}`;
  $("numbers").hidden = false;
}

let previewUrl = null;

async function predict(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const preview = $("preview");
  preview.src = previewUrl;
  preview.hidden = false;
  $("drop-text").textContent = file.name;
  setStatus(`Locating ${file.name}…`, "busy");
  const body = new FormData();
  body.append("image", file, file.name);
  const t0 = performance.now();
  try {
    const resp = await fetch("/predict", { method: "POST", body });
    const data = await resp.json();
    if (!resp.ok) {
      setStatus(`${data.error || "HTTP " + resp.status}: ${data.detail || ""}`, "error");
      return;
    }
    showPrediction(data, performance.now() - t0);
    setStatus(`${file.name}: ${data.snapped ? "snapped" : "on the walkable floor"}.`, "done");
  } catch (err) {
    setStatus(`The request failed: ${err}`, "error");
  }
}

function setUpInput() {
  const drop = $("drop"), input = $("file");
  input.addEventListener("change", () => { if (input.files.length) predict(input.files[0]); });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.dataset.state = "over"; });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.dataset.state = "empty"; });
  }
  drop.addEventListener("drop", (e) => {
    const f = e.dataTransfer.files[0];
    if (f) predict(f);
  });
}

async function main() {
  setUpInput();
  try {
    const m = await getJSON("/model");
    const where = [m.profile && `profile ${m.profile}`, m.labels && `labels ${m.labels}`, m.name].filter(Boolean);
    $("model-line").textContent = `${m.kind} (${m.backbone}, input ${m.image_size[0]}×${m.image_size[1]}, ` +
      `${(m.parameters / 1e6).toFixed(2)} M parameters)` + (where.length ? `; ${where.join(", ")}` : "") +
      (m.status ? `; training ${m.status}` : "");
    drawPlan(await getJSON("/plan"));
  } catch (err) {
    setStatus(`Cannot reach the server: ${err}`, "error");
  }
}

main();

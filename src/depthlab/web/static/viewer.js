// depthlab's point-cloud viewer: reads the binary PLY that /api/predict?format=ply returns (the writer of
// `depthlab predict --formats ply`) and shows it with three.js (vendored subset, no CDN).
// Written for depthlab; the orbit control is a small one of our own (the three.js OrbitControls addon alone is
// larger than this whole file): drag = rotate, shift/right drag = pan, wheel or pinch = zoom.
import * as THREE from "./three.subset.min.js";

const SIZES = { float: 4, uchar: 1 };

// Binary little-endian PLY, vertex element only -> {positions (Float32Array, xyz), colors (Float32Array rgb 0..1
// or null), count, comments}.
export function parsePly(buffer) {
  const bytes = new Uint8Array(buffer);
  const marker = "end_header\n";
  let head = "", end = -1;
  for (let i = 0; i < Math.min(bytes.length, 65536); i++) {
    head += String.fromCharCode(bytes[i]);
    if (head.endsWith(marker)) { end = i + 1; break; }
  }
  if (end < 0 || !head.startsWith("ply\n")) throw new Error("not a PLY file");
  if (!head.includes("format binary_little_endian")) throw new Error("not a binary little-endian PLY");
  const props = [], comments = [];
  let count = 0;
  for (const line of head.split("\n")) {
    const t = line.trim().split(/\s+/);
    if (t[0] === "element" && t[1] === "vertex") count = parseInt(t[2], 10);
    else if (t[0] === "property") props.push({ type: t[1], name: t[2] });
    else if (t[0] === "comment") comments.push(t.slice(1).join(" "));
  }
  let stride = 0;
  const offset = {};
  for (const p of props) { offset[p.name] = stride; stride += SIZES[p.type]; }
  const view = new DataView(buffer, end);
  const positions = new Float32Array(count * 3);
  const hasColor = "red" in offset;
  const colors = hasColor ? new Float32Array(count * 3) : null;
  for (let i = 0; i < count; i++) {
    const o = i * stride;
    positions[3 * i] = view.getFloat32(o + offset.x, true);
    positions[3 * i + 1] = view.getFloat32(o + offset.y, true);
    positions[3 * i + 2] = view.getFloat32(o + offset.z, true);
    if (hasColor) {
      colors[3 * i] = view.getUint8(o + offset.red) / 255;
      colors[3 * i + 1] = view.getUint8(o + offset.green) / 255;
      colors[3 * i + 2] = view.getUint8(o + offset.blue) / 255;
    }
  }
  return { positions, colors, count, comments };
}

// Orbit camera around a target: spherical coordinates, updated by pointer events on the canvas.
class Orbit {
  constructor(camera, element, onChange) {
    this.camera = camera; this.onChange = onChange;
    this.target = new THREE.Vector3(); this.sph = new THREE.Spherical(1, Math.PI / 2, 0);
    this.pointers = new Map();
    element.style.touchAction = "none";
    element.addEventListener("contextmenu", (e) => e.preventDefault());
    element.addEventListener("pointerdown", (e) => { element.setPointerCapture(e.pointerId); this.pointers.set(e.pointerId, e); });
    element.addEventListener("pointerup", (e) => this.pointers.delete(e.pointerId));
    element.addEventListener("pointercancel", (e) => this.pointers.delete(e.pointerId));
    element.addEventListener("pointermove", (e) => this.move(e));
    element.addEventListener("wheel", (e) => { e.preventDefault(); this.zoom(Math.exp(e.deltaY * 0.001)); }, { passive: false });
  }
  // home view: from slightly right of and above the photo's camera, so that the relief shows at once
  set(target, radius) { this.target.copy(target); this.sph.set(radius, Math.PI / 2 - 0.25, 0.45); this.update(); }
  zoom(f) { this.sph.radius = Math.max(1e-3, this.sph.radius * f); this.update(); }
  move(e) {
    const prev = this.pointers.get(e.pointerId);
    if (!prev) return;
    if (this.pointers.size === 2) {  // pinch: the distance between the two fingers
      const other = [...this.pointers.values()].find((p) => p.pointerId !== e.pointerId);
      const d0 = Math.hypot(prev.clientX - other.clientX, prev.clientY - other.clientY);
      const d1 = Math.hypot(e.clientX - other.clientX, e.clientY - other.clientY);
      if (d0 > 0 && d1 > 0) this.zoom(d0 / d1);
    } else if (e.shiftKey || (e.buttons & 2)) {  // pan in the view plane
      const s = this.sph.radius * 0.002;
      const right = new THREE.Vector3().setFromMatrixColumn(this.camera.matrix, 0);
      const up = new THREE.Vector3().setFromMatrixColumn(this.camera.matrix, 1);
      this.target.addScaledVector(right, -(e.clientX - prev.clientX) * s).addScaledVector(up, (e.clientY - prev.clientY) * s);
      this.update();
    } else {
      this.sph.theta -= (e.clientX - prev.clientX) * 0.006;
      this.sph.phi = Math.min(Math.PI - 0.05, Math.max(0.05, this.sph.phi - (e.clientY - prev.clientY) * 0.006));
      this.update();
    }
    this.pointers.set(e.pointerId, e);
  }
  update() {
    this.camera.position.setFromSpherical(this.sph).add(this.target);
    this.camera.lookAt(this.target);
    this.camera.updateMatrixWorld();
    this.onChange();
  }
}

export class CloudViewer {
  constructor(canvas) {
    this.canvas = canvas;
    // preserveDrawingBuffer: the canvas can be read back (toDataURL) after a frame: tests, screenshots
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(window.devicePixelRatio || 1);
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0x111111);
    this.camera = new THREE.PerspectiveCamera(60, 1, 0.01, 1000);
    this.orbit = new Orbit(this.camera, canvas, () => this.render());
    this.points = null; this.home = null;
    new ResizeObserver(() => this.resize()).observe(canvas);
  }
  resize() {
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (!w || !h) return;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h; this.camera.updateProjectionMatrix();
    this.render();
  }
  clear() {
    if (this.points) { this.scene.remove(this.points); this.points.geometry.dispose(); this.points.material.dispose(); }
    this.points = null; this.render();
  }
  // The PLY's camera frame is x right, y down, z forward (OpenCV); three.js looks down -z with y up: flip y, z.
  show(buffer) {
    const ply = parsePly(buffer);
    this.clear();
    const p = ply.positions, zs = new Float32Array(ply.count);
    for (let i = 0; i < ply.count; i++) { p[3 * i + 1] = -p[3 * i + 1]; p[3 * i + 2] = -p[3 * i + 2]; zs[i] = -p[3 * i + 2]; }
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute("position", new THREE.BufferAttribute(p, 3));
    if (ply.colors) geometry.setAttribute("color", new THREE.BufferAttribute(ply.colors, 3));
    zs.sort();
    const zMed = zs[Math.floor(ply.count / 2)] || 1, zFar = zs[Math.floor(ply.count * 0.98)] || 1;
    // seen from the photo's camera, a point must cover its (subsampled) pixel: three.js draws a point of size s
    // at depth z over s * (H/2) / z screen pixels, and neighbouring pixels lie z / (fx tan(30 deg)) * (H/2) / z
    // apart with this 60 degree camera; sized for the far (98th percentile) points, nearer ones overlap
    const fx = parseFloat((ply.comments.join(" ").match(/fx=([0-9.eE+-]+)/) || [])[1]) || 500;
    const size = 1.2 * zFar / (fx * Math.tan(Math.PI / 6));
    const material = new THREE.PointsMaterial({ size, vertexColors: !!ply.colors, sizeAttenuation: true });
    this.points = new THREE.Points(geometry, material);
    this.scene.add(this.points);
    this.home = { target: new THREE.Vector3(0, 0, -zMed), radius: zMed };  // start where the photo was taken
    this.reset();
    return ply.count;
  }
  reset() { if (this.home) this.orbit.set(this.home.target, this.home.radius); }
  render() { this.renderer.render(this.scene, this.camera); }
}

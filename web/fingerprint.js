// Model Fingerprint: show each node's picture (and its summary) inside the node.
//
// Uses only the frontend's public extension API: `app.registerExtension`, a node type's
// `onExecuted`, and `node.addDOMWidget` (a DOM element the frontend positions over the node).
// The node sends `ui.picture` (one self-contained SVG drawn by fpcore.picture, names escaped
// there) and `ui.text` (the summary). The widget is never serialized into the prompt or the
// workflow: the picture belongs to the last run.
import { app } from "../../scripts/app.js";

const NODES = new Set(["ModelFingerprintIdentifyCheckpoint", "ModelFingerprintIdentifyLoadedModel",
                       "ModelFingerprintLoraFit"]);
const WIDGET = "fingerprint_picture";
const MIN_HEIGHT = 60;          // px: the summary alone
const PICTURE_WIDTH = 760;      // fpcore.picture.WIDTH: the node grows to show the picture at a readable size
const MAX_NODE_WIDTH = 620;

function pictureWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (widget) return widget;
  const el = document.createElement("div");
  el.className = "mfp-node-picture";
  el.style.cssText = "width:100%;height:100%;overflow:auto;box-sizing:border-box;background:#fff;color:#222;" +
    "border-radius:6px;padding:4px;font:12px/1.35 sans-serif";
  widget = node.addDOMWidget(WIDGET, "fingerprint_picture", el, {
    serialize: false,                      // not part of the prompt nor of the saved workflow
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => widget?.mfpHeight ?? MIN_HEIGHT,
  });
  widget.serialize = false;
  widget.mfpElement = el;
  return widget;
}

function parseSvg(svgText) {
  if (!svgText) return null;
  const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
  const svg = doc.documentElement;
  if (!svg || svg.nodeName.toLowerCase() !== "svg" || doc.getElementsByTagName("parsererror").length) return null;
  return document.importNode(svg, true);
}

function show(node, message) {
  const widget = pictureWidget(node);
  const el = widget.mfpElement || widget.element;
  const text = Array.isArray(message?.text) ? message.text.join("\n") : String(message?.text ?? "");
  const svg = parseSvg(Array.isArray(message?.picture) ? message.picture[0] : message?.picture);
  el.replaceChildren();
  if (svg) {
    svg.style.width = "100%";
    svg.style.height = "auto";
    svg.style.display = "block";
    el.appendChild(svg);
  }
  const summary = document.createElement("div");
  summary.className = "mfp-node-summary";
  summary.style.whiteSpace = "pre-wrap";
  summary.style.padding = "4px 2px 0";
  summary.textContent = text;
  el.appendChild(summary);
  // size: the picture's aspect ratio at the node's (widened) width, plus the summary lines
  const width = Math.max(node.size[0], Math.min(MAX_NODE_WIDTH, PICTURE_WIDTH));
  let height = MIN_HEIGHT + 18 * Math.max(0, text.split("\n").length - 1);
  if (svg) {
    const vb = (svg.getAttribute("viewBox") || "").split(/\s+/).map(Number);
    if (vb.length === 4 && vb[2] > 0) height += ((width - 20) * vb[3]) / vb[2];
  }
  widget.mfpHeight = Math.round(height);
  requestAnimationFrame(() => {
    const size = node.computeSize();
    node.setSize([Math.max(size[0], width), Math.max(size[1], node.size[1])]);
    app.graph?.setDirtyCanvas(true, true);
  });
}

app.registerExtension({
  name: "ModelFingerprint.Picture",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      show(this, message);
    };
  },
});

// Model Fingerprint: show each node's summary inside the node.
// ComfyUI's frontend renders a node's `ui.text` only for its own nodes, so this
// extension adds (once) a read-only multiline text widget and fills it on every run.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODES = new Set(["ModelFingerprintIdentifyCheckpoint", "ModelFingerprintIdentifyLoadedModel"]);
const WIDGET = "fingerprint_summary";

function showText(node, text) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, WIDGET, ["STRING", { multiline: true }], app).widget;
    widget.serialize = false;                     // never sent with the prompt
    widget.options = { ...(widget.options || {}), serialize: false }; // nor saved in the workflow
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.opacity = 0.85;
    }
  }
  widget.value = text;
  requestAnimationFrame(() => {
    const size = node.computeSize();
    node.setSize([Math.max(size[0], node.size[0]), Math.max(size[1], node.size[1])]);
    app.graph?.setDirtyCanvas(true, false);
  });
}

app.registerExtension({
  name: "ModelFingerprint.ShowSummary",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      showText(this, Array.isArray(text) ? text.join("\n") : String(text ?? ""));
    };
  },
});

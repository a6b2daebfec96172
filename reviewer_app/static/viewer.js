// Keyboard and mouse-wheel navigation for the synthdx viewer.
// Gradio has no hotkeys (gradio-app/gradio#2670): keys click hidden buttons by elem_id.
(() => {
  const KEYS = {
    ArrowUp: "up", ArrowDown: "down", PageUp: "pageup", PageDown: "pagedown",
    Home: "home", End: "end", "1": "preset1", "2": "preset2", "3": "preset3", "4": "preset4", "5": "preset5",
  };
  const typing = (t) => t && (t.isContentEditable || t.tagName === "TEXTAREA" ||
    (t.tagName === "INPUT" && !["checkbox", "radio", "button"].includes(t.type)) || t.tagName === "SELECT");
  const press = (id) => {
    const el = document.getElementById(id);
    const btn = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
    if (btn) { btn.click(); return true; }
    return false;
  };
  const viewerVisible = () => {
    const v = document.getElementById("sdx-view-axial");
    return v && v.offsetParent !== null;
  };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target) || !viewerVisible()) return;
    const name = KEYS[e.key];
    if (name && press(`sdx-key-${name}`)) e.preventDefault();
  });
  let last = 0;
  document.addEventListener("wheel", (e) => {
    const view = e.target.closest && e.target.closest(".sdx-view");
    if (!view || !view.id.startsWith("sdx-view-")) return;
    e.preventDefault();
    const now = performance.now();
    if (now - last < 35) return; // trackpads fire dozens of events per notch
    last = now;
    press(`sdx-wheel-${view.id.slice("sdx-view-".length)}-${e.deltaY < 0 ? "up" : "down"}`);
  }, { passive: false });
})();

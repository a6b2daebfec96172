// Keyboard and mouse-wheel shortcuts for the reader page (/study).
// Answers are picked client-side by clicking the radio inputs; slices, presets and zoom click
// hidden buttons by elem_id, as in viewer.js. Keys are listed on the page (tabs/reader.py KEY_HELP).
(() => {
  const MOVES = { ArrowUp: "up", ArrowDown: "down", PageUp: "pageup", PageDown: "pagedown", Home: "home", End: "end" };
  const LIKERT = { KeyZ: 0, KeyX: 1, KeyC: 2, KeyV: 3, KeyB: 4 };
  const typing = (t) => t && (t.isContentEditable || t.tagName === "TEXTAREA" ||
    (t.tagName === "INPUT" && !["checkbox", "radio", "button", "range"].includes(t.type)) || t.tagName === "SELECT");
  const shown = (el) => el && el.offsetParent !== null;
  const press = (id) => {
    const el = document.getElementById(id);
    const btn = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
    if (btn && !btn.disabled) { btn.click(); return true; }
    return false;
  };
  const choose = (id, index) => {
    const inputs = document.querySelectorAll(`#${id} input[type=radio]`);
    if (index < 0 || index >= inputs.length || inputs[index].disabled) return false;
    inputs[index].click();
    return true;
  };
  const casePanel = () => shown(document.getElementById("sdx-stimulus"));
  const volume = () => shown(document.getElementById("sdx-r-slice"));
  const advance = () => {
    const next = document.getElementById("sdx-next");
    if (shown(next)) return press("sdx-next");
    const submit = document.getElementById("sdx-submit");
    return shown(submit) && press("sdx-submit");
  };

  document.addEventListener("keydown", (e) => {
    if (!document.getElementById("sdx-reader")) return;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target.tagName === "TEXTAREA") {
      if (advance()) e.preventDefault();  // Ctrl+Enter submits from the comment box
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (!casePanel()) {
      if (e.key === "Enter" && shown(document.getElementById("sdx-start")) && press("sdx-start")) e.preventDefault();
      return;
    }
    let done = false;
    if (e.shiftKey && /^Digit[1-7]$/.test(e.code)) done = choose("sdx-confidence", Number(e.code.slice(5)) - 1);
    else if (e.shiftKey) return;
    else if (e.code === "KeyR") done = choose("sdx-call", 0);
    else if (e.code === "KeyS") done = choose("sdx-call", 1);
    else if (e.code in LIKERT) done = choose("sdx-likert", LIKERT[e.code]);
    else if (e.code === "KeyN") done = press("sdx-next");
    else if (e.key === "Enter" && e.target.tagName !== "BUTTON") done = advance();
    else if (volume() && e.key in MOVES) done = press(`sdx-r-key-${MOVES[e.key]}`);
    else if (volume() && /^[1-5]$/.test(e.key)) done = press(`sdx-r-key-preset${e.key}`);
    else if (!volume() && (e.key === "+" || e.key === "=")) done = press("sdx-r-key-zoom-in");
    else if (!volume() && e.key === "-") done = press("sdx-r-key-zoom-out");
    if (done) e.preventDefault();
  });

  let last = 0;
  document.addEventListener("wheel", (e) => {
    const view = e.target.closest && e.target.closest("#sdx-stimulus");
    if (!view || !volume()) return;
    e.preventDefault();
    const now = performance.now();
    if (now - last < 35) return; // trackpads fire dozens of events per notch
    last = now;
    press(`sdx-r-key-${e.deltaY < 0 ? "up" : "down"}`);
  }, { passive: false });
})();

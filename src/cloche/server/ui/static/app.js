// The sandbox page's terminal: xterm.js over the dashboard's PTY WebSocket (the session
// cookie authenticates it). Binary frames carry keystrokes and output; a text frame
// {"type": "resize"} resizes; the server's last frame is {"type": "exit"}.
"use strict";
(function () {
  const button = document.getElementById("open-terminal");
  const box = document.getElementById("terminal");
  if (!button || !box) return;
  button.addEventListener("click", function () {
    button.disabled = true;
    box.replaceChildren();
    box.classList.add("open");
    const term = new Terminal({ cursorBlink: true, fontSize: 13, scrollback: 5000 });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}${button.dataset.ws}?rows=${term.rows}&cols=${term.cols}`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const encoder = new TextEncoder();
    ws.onmessage = function (ev) {
      if (typeof ev.data === "string") {
        const msg = JSON.parse(ev.data);
        if (msg.type === "exit") term.write(`\r\n[process exited with ${msg.exit_code}]\r\n`);
      } else {
        term.write(new Uint8Array(ev.data));
      }
    };
    ws.onclose = function (ev) {
      term.write(`\r\n[disconnected${ev.reason ? ": " + ev.reason : ""}]\r\n`);
      button.disabled = false;
    };
    term.onData(function (data) { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
    term.onResize(function (size) {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", rows: size.rows, cols: size.cols }));
    });
    window.addEventListener("resize", function () { fit.fit(); });
    ws.onopen = function () { term.focus(); };
  });
})();

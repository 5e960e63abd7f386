// Opens the notebook's WebSocket as soon as the page starts, while its modules and the editor
// bundle still load, so that the server makes and sends the state meanwhile: a classic script in
// <head> (templates/notebooks/detail.html, `data-socket`: the socket's path). It only keeps the
// frames that arrive; connection.js adopts the socket on its first open and replays them in order
// (docs/frontend.md, "Big notebooks"). Standalone and tiny: it holds up the page's parsing.
(function () {
  var script = document.currentScript;
  var path = script && script.dataset.socket;
  // Already claimed: the page's modules ran first and opened a socket of their own.
  if (!path || typeof WebSocket !== "function" || window.notebookEarlySocket !== undefined) return;
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  var frames = [];
  var socket = new WebSocket(url);
  function keep(event) {
    frames.push(event.data);
  }
  socket.addEventListener("message", keep);
  window.notebookEarlySocket = {
    url: url,
    socket: socket,
    frames: frames,
    release: function () {
      socket.removeEventListener("message", keep);
    },
  };
})();

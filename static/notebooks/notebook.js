// The live notebook page: enhances the server-rendered notebook (templates/notebooks/detail.html)
// into an editable, reactive one over the WebSocket protocol (docs/protocol.md). Modules in js/.
import { NotebookApp } from "./js/app.js";

const root = document.getElementById("notebook");
if (root) new NotebookApp(root).start();

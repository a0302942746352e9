// Upload page: drag-and-drop onto the drop zone, show the chosen file's name and size before upload,
// warn (and block) when it is over the server's limit. Plain JavaScript, no libraries.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var input = form && form.querySelector("input[type=file]");
  if (!input) return;
  var zone = document.getElementById("dropzone");
  var info = document.getElementById("file-info");
  var button = document.getElementById("submit-button");
  var busy = document.getElementById("busy");
  var maxBytes = parseInt(input.getAttribute("data-max-bytes"), 10) || 0;

  function human(bytes) {
    if (bytes < 1000) return bytes + " bytes";
    if (bytes < 1000 * 1000) return (bytes / 1000).toFixed(1) + " kB";
    return (bytes / 1000 / 1000).toFixed(1) + " MB";
  }

  function show() {
    var file = input.files && input.files[0];
    info.classList.remove("too-big");
    if (!file) { info.textContent = ""; return true; }
    var text = file.name + " \u2014 " + human(file.size);
    if (maxBytes && file.size > maxBytes) {
      info.classList.add("too-big");
      info.textContent = text + ": larger than the limit of " + human(maxBytes) + ", choose a smaller picture.";
      return false;
    }
    if (!/^image\/(jpeg|png)$/.test(file.type || "")) {
      text += " (not a JPEG or PNG by its type; the server checks the content)";
    }
    info.textContent = text;
    return true;
  }

  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("dragover"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      show();
    }
  });
  form.addEventListener("submit", function (e) {
    if (!show()) { e.preventDefault(); return; }
    if (input.files && input.files.length) {
      button.disabled = true;
      if (busy) busy.hidden = false;
    }
  });
})();

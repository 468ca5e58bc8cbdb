// Upload with a progress bar: the form posts through XMLHttpRequest so the browser reports
// bytes sent; the server's answer (a redirect to the report, or the form with errors) replaces the page.
(function () {
  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  var bar = document.getElementById("progress"), fill = bar.firstElementChild;
  var text = document.getElementById("progress-text"), button = document.getElementById("upload-button");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      var pct = Math.round((e.loaded / e.total) * 100);
      fill.style.width = pct + "%";
      text.textContent = pct < 100 ? "Uploading… " + pct + "%" : "Uploaded. Checking every row against the schema…";
    });
    xhr.addEventListener("load", function () {
      // The XHR already followed the redirect to the report (and consumed its message): show
      // that response as the page, under its own address.
      if (xhr.responseURL && window.history.replaceState) window.history.replaceState(null, "", xhr.responseURL);
      document.open(); document.write(xhr.responseText); document.close();
    });
    xhr.addEventListener("error", function () {
      text.textContent = "The upload failed (connection lost). Nothing was stored; try again.";
      button.disabled = false;
    });
    bar.style.display = "block"; button.disabled = true; text.textContent = "Uploading…";
    xhr.send(new FormData(form));
  });
})();

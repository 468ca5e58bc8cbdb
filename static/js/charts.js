// Draws every chart of the page: each is a JSON data block (a plotly figure: data, layout,
// config) right after an empty <div class="chart">. Kept out of the HTML as data, not as inline
// script, so the Content-Security-Policy can forbid inline scripts.
(function () {
  function draw() {
    document.querySelectorAll("div.chart + script[type='application/json']").forEach(function (block) {
      var figure = JSON.parse(block.textContent);
      window.Plotly.newPlot(block.previousElementSibling, figure.data, figure.layout, figure.config);
    });
  }
  // Drawn once the grid has given each card its final width (plotly would fall back to 700px).
  if (document.readyState === "complete") draw(); else window.addEventListener("load", draw);
})();

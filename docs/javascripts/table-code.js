// Inline code in table cells may break only after punctuation in a name (. _ / - , ( :),
// never inside a word: a <wbr> after each such character; the stylesheet forbids other breaks.
document$.subscribe(function () {
  document.querySelectorAll(".md-typeset table code").forEach(function (code) {
    if (code.dataset.breaks || code.children.length) return;
    code.dataset.breaks = "1";
    var parts = code.textContent.split(/(?<=[._\/\-,(:])/);
    if (parts.length < 2) return;
    code.textContent = "";
    parts.forEach(function (part, index) {
      if (index) code.appendChild(document.createElement("wbr"));
      code.appendChild(document.createTextNode(part));
    });
  });
});

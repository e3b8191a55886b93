// MathJax 3 configuration, loaded before the site's own copy of MathJax (assets/mathjax/).
// pymdownx.arithmatex (generic mode) wraps formulas in \( \) / \[ \] inside .arithmatex
// elements; the notebooks' Markdown cells (rendered by nbconvert) keep $ / $$ delimiters.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown"
  }
};

document$.subscribe(() => {
  if (!window.MathJax.typesetPromise) return;  // first page: MathJax typesets on startup
  MathJax.startup.output.clearCache()
  MathJax.typesetClear()
  MathJax.texReset()
  MathJax.typesetPromise()
})

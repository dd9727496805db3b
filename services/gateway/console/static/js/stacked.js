// A table that turns into one card per row on a narrow screen (history.css, `table.stacked`):
// each cell is labelled with its column's heading, as the header row is then hidden.

export function stacked(table) {
  table.classList.add('stacked');
  const headings = [...table.querySelectorAll('thead th')].map((th) => th.textContent.trim());
  for (const row of table.querySelectorAll('tbody tr')) {
    [...row.children].forEach((cell, i) => {
      if (headings[i]) cell.dataset.label = headings[i];
    });
  }
  return table;
}

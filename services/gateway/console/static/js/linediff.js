// A line diff (longest common subsequence) of two short texts, such as two rule versions
// as readable lines: a rule is tens of lines, so the quadratic table costs nothing.

// Items compare by `key(item)`. Returns [{kind: 'same' | 'removed' | 'added', left, right}]
// in reading order, removals before the additions that replace them.
export function diffLines(before, after, key = (x) => x) {
  const a = before.map(key);
  const b = after.map(key);
  const n = a.length;
  const m = b.length;
  // common[i][j]: length of the longest common subsequence of a[i..] and b[j..].
  const common = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      common[i][j] = a[i] === b[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push({ kind: 'same', left: before[i++], right: after[j++] });
    } else if (j >= m || (i < n && common[i + 1][j] >= common[i][j + 1])) {
      out.push({ kind: 'removed', left: before[i++], right: null });
    } else {
      out.push({ kind: 'added', left: null, right: after[j++] });
    }
  }
  return out;
}

// Side by side: each run of removals is paired with the run of additions after it, line
// for line, so a changed line sits next to its new form. [{kind, left, right}] where kind
// is 'same', 'changed', 'removed' or 'added'.
export function sideBySide(lines) {
  const rows = [];
  for (let k = 0; k < lines.length;) {
    if (lines[k].kind === 'same') {
      rows.push(lines[k++]);
      continue;
    }
    const removed = [];
    const added = [];
    while (k < lines.length && lines[k].kind === 'removed') removed.push(lines[k++].left);
    while (k < lines.length && lines[k].kind === 'added') added.push(lines[k++].right);
    for (let p = 0; p < Math.max(removed.length, added.length); p++) {
      const left = removed[p] ?? null;
      const right = added[p] ?? null;
      rows.push({ kind: left && right ? 'changed' : left ? 'removed' : 'added', left, right });
    }
  }
  return rows;
}

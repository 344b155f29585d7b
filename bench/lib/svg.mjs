/**
 * A plain SVG bar chart: one group per workload, one horizontal bar per peer,
 * each group scaled to its own slowest bar (workloads differ by orders of
 * magnitude), the seconds written beside each bar. No dependencies.
 */
const COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#7f7f7f', '#ff7f0e', '#9467bd', '#8c564b', '#17becf', '#bcbd22'];

const esc = (s) => String(s).replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]);

/** rows: [{ workload, medians: { peer: seconds } }]; peers: names in legend order. */
export function barChart(rows, peers, title) {
  const bar = 14;
  const gap = 4;
  const left = 110;
  const width = 720;
  const plot = width - left - 90;
  let y = 40;
  const parts = [];
  for (const row of rows) {
    const present = peers.filter((p) => Number.isFinite(row.medians[p]));
    if (present.length === 0) continue;
    const max = Math.max(...present.map((p) => row.medians[p]));
    parts.push(`<text x="8" y="${y + bar}" font-size="12" font-weight="bold">${esc(row.workload)}</text>`);
    for (const p of present) {
      const v = row.medians[p];
      const w = Math.max(1, (v / max) * plot);
      const color = COLORS[peers.indexOf(p) % COLORS.length];
      parts.push(
        `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${bar}" fill="${color}"><title>${esc(p)}: ${v.toFixed(3)} s</title></rect>`,
      );
      parts.push(`<text x="${(left + w + 4).toFixed(1)}" y="${y + bar - 3}" font-size="10">${v.toFixed(3)}</text>`);
      y += bar + gap;
    }
    y += 10;
  }
  const legend = peers
    .map(
      (p, i) =>
        `<rect x="${8 + i * 150}" y="${y + 4}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${22 + i * 150}" y="${y + 13}" font-size="11">${esc(p)}</text>`,
    )
    .join('');
  const height = y + 30;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="8" y="20" font-size="14">${esc(title)}</text>
${parts.join('\n')}
${legend}
</svg>
`;
}

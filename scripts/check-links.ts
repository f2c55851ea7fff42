// Fails when a relative link or #anchor in README.md or docs/**/*.md points nowhere: a file that
// does not exist, or a heading no Markdown file has (GitHub's heading slugs). `npm run docs:links`;
// CI runs it after the lint. External links (http:, https:, mailto:) are not fetched.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return markdownFiles(path);
    return e.name.endsWith('.md') ? [path] : [];
  });
}

/** The text outside fenced code blocks and inline code spans, where links and headings live. */
function prose(text: string): string[] {
  let fence: string | undefined;
  return text.split('\n').map((line) => {
    const open = /^\s*(`{3,}|~{3,})/.exec(line);
    if (open) {
      if (fence === undefined) fence = open[1]![0]!;
      else if (open[1]![0] === fence) fence = undefined;
      return '';
    }
    return fence === undefined ? line.replace(/`[^`]*`/g, '') : '';
  });
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  return heading
    .replace(/`/g, '')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

const anchorCache = new Map<string, Set<string>>();
function anchorsOf(file: string): Set<string> {
  let anchors = anchorCache.get(file);
  if (anchors) return anchors;
  anchors = new Set();
  const seen = new Map<string, number>();
  const text = readFileSync(file, 'utf8');
  // Headings are read with their code spans, which prose() would drop.
  let fence = false;
  for (const line of text.split('\n')) {
    if (/^\s*(`{3,}|~{3,})/.test(line)) fence = !fence;
    if (fence) continue;
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      const base = slug(heading[1]!);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      anchors.add(n === 0 ? base : `${base}-${n}`);
    }
    for (const m of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(m[1]!);
  }
  anchorCache.set(file, anchors);
  return anchors;
}

export function brokenLinks(files: string[]): string[] {
  const problems: string[] = [];
  for (const file of files) {
    const lines = prose(readFileSync(file, 'utf8'));
    lines.forEach((line, i) => {
      const targets = [
        ...[...line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!),
        ...[...line.matchAll(/^\s*\[[^\]]+\]:\s*(\S+)/g)].map((m) => m[1]!),
      ];
      for (const target of targets) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
        const [path = '', anchor] = target.split('#', 2);
        const where = `${relative(root, file)}:${i + 1}`;
        const dest = path === '' ? file : resolve(dirname(file), decodeURIComponent(path));
        if (!existsSync(dest)) {
          problems.push(`${where}: ${target}: no such file ${relative(root, dest)}`);
          continue;
        }
        if (anchor === undefined || anchor === '') continue;
        if (statSync(dest).isDirectory() || !dest.endsWith('.md')) continue;
        if (!anchorsOf(dest).has(decodeURIComponent(anchor))) problems.push(`${where}: ${target}: no heading #${anchor} in ${relative(root, dest)}`);
      }
    });
  }
  return problems;
}

const docs = join(root, 'docs');
const files = [join(root, 'README.md'), ...(existsSync(docs) ? markdownFiles(docs) : [])];
const problems = brokenLinks(files);
for (const p of problems) console.error(p);
if (problems.length > 0) {
  console.error(`${problems.length} broken link${problems.length === 1 ? '' : 's'} in ${files.length} files`);
  process.exit(1);
}
console.log(`links ok: ${files.length} files`);

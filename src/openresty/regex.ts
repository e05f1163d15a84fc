/**
 * JavaScript regular expressions (as the header, cookie and query strategies compile them: `new
 * RegExp(source)`, no flags) translated to PCRE2 for `ngx.re.find(value, pattern, "jou")`, so
 * both match exactly the same values. The Lua side hands PCRE valid UTF-8 only (header values
 * are widened from Latin-1 as Node reads them, query values decoded with U+FFFD for bad bytes),
 * so in UTF mode one PCRE character is one JavaScript code unit for every character up to
 * U+FFFF.
 *
 * What differs between the two engines is translated (`.`, `$`, `\s`, `\v`, `\uHHHH`, literal
 * braces) and what cannot be made the same is refused with the reason: backreferences (an unset
 * group matches empty in JavaScript and fails in PCRE), lookbehind (PCRE needs a fixed length),
 * escapes whose meaning differs or that PCRE lacks (`\p`, `\a`, `\e`, octal), empty classes `[]` and
 * `[^]`, and characters above U+FFFF in the pattern (two code units to JavaScript, one
 * character to PCRE).
 */

/** JavaScript's `\s`: WhiteSpace and LineTerminator (ECMA-262 §22.2.2.9), as PCRE class items. */
const JS_SPACE_ITEMS = '\\t\\n\\x{0b}\\f\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}';
/** JavaScript's `.` without the `s` flag: anything but a line terminator. */
const JS_DOT = '[^\\n\\r\\x{2028}\\x{2029}]';

const isHex = (c: string | undefined) => c !== undefined && /^[0-9A-Fa-f]$/.test(c);
const isDigit = (c: string | undefined) => c !== undefined && c >= '0' && c <= '9';
const isAsciiAlnum = (c: string) => /^[0-9A-Za-z]$/.test(c);

function codePoint(hex: string): string {
  return `\\x{${hex.toLowerCase()}}`;
}

/** A literal character for PCRE: ASCII punctuation escaped (always a literal in PCRE), anything else as itself. */
function literal(c: string): string {
  return /^[!-/:-@[-`{-~]$/.test(c) ? `\\${c}` : c;
}

/** Reads `{n}`, `{n,}` or `{n,m}` at `i` (JavaScript's quantifier forms); its length, or 0 when there is none. */
function quantifierLength(source: string, i: number): number {
  const match = /^\{[0-9]+(,[0-9]*)?\}/.exec(source.slice(i));
  return match ? match[0].length : 0;
}

export type RegexTranslation = { readonly pattern: string } | { readonly issue: string };

/**
 * The PCRE2 pattern that matches exactly what `new RegExp(source)` matches, or why there is
 * none. `source` must be a valid JavaScript pattern (the config schema checked it).
 */
export function translateRegex(source: string): RegexTranslation {
  let out = '';
  let i = 0;
  const n = source.length;
  const refuse = (what: string): RegexTranslation => ({ issue: `${what}, which PCRE (the OpenResty data plane's engine) does not match the way JavaScript does; rewrite the pattern without it` });

  for (let k = 0; k < n; k++) {
    const code = source.charCodeAt(k);
    if (code >= 0xd800 && code <= 0xdfff) return refuse(`the pattern holds a character above U+FFFF (${JSON.stringify(source.slice(k, k + 2))})`);
  }

  /** One escape at `source[i] === '\\'`; `inClass` for inside [...]. Returns the PCRE text and the length consumed, or an issue. */
  const escape = (inClass: boolean): { text: string; length: number; isClass: boolean } | { issue: string } => {
    const c = source[i + 1];
    if (c === undefined) return { issue: 'a trailing backslash' };
    switch (c) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
        return { text: `\\${c}`, length: 2, isClass: true };
      case 'b':
      case 'B':
        // In a class, \b is a backspace in both; outside, a word boundary (ASCII words in both).
        if (inClass) return c === 'b' ? { text: '\\x{08}', length: 2, isClass: false } : { issue: '\\B inside a character class' };
        return { text: `\\${c}`, length: 2, isClass: false };
      case 's':
        return { text: inClass ? JS_SPACE_ITEMS : `[${JS_SPACE_ITEMS}]`, length: 2, isClass: true };
      case 'S':
        if (inClass) return { issue: '\\S inside a character class' };
        return { text: `[^${JS_SPACE_ITEMS}]`, length: 2, isClass: true };
      case 't':
      case 'n':
      case 'r':
      case 'f':
        return { text: `\\${c}`, length: 2, isClass: false };
      case 'v':
        return { text: '\\x{0b}', length: 2, isClass: false };
      case 'x':
        if (isHex(source[i + 2]) && isHex(source[i + 3])) return { text: codePoint(source.slice(i + 2, i + 4)), length: 4, isClass: false };
        return { issue: '\\x without two hex digits' };
      case 'u':
        if ([2, 3, 4, 5].every((d) => isHex(source[i + d]))) {
          const hex = source.slice(i + 2, i + 6);
          const value = parseInt(hex, 16);
          if (value >= 0xd800 && value <= 0xdfff) return { issue: `\\u${hex}, a UTF-16 surrogate` };
          return { text: codePoint(hex), length: 6, isClass: false };
        }
        return { issue: '\\u without four hex digits' };
      case 'c': {
        const letter = source[i + 2];
        if (letter !== undefined && /^[A-Za-z]$/.test(letter)) return { text: codePoint((letter.charCodeAt(0) % 32).toString(16)), length: 3, isClass: false };
        return { issue: '\\c without a letter' };
      }
      case '0':
        if (!isDigit(source[i + 2])) return { text: '\\x{00}', length: 2, isClass: false };
        return { issue: 'an octal escape (\\0 followed by a digit)' };
      default:
        if (isDigit(c)) return { issue: `a backreference or octal escape (\\${c})` };
        if (c === 'k') return { issue: 'a named backreference (\\k)' };
        if (isAsciiAlnum(c)) return { issue: `the escape \\${c}` };
        // An escaped punctuation or non-ASCII character is that character in both engines.
        return { text: literal(c), length: 2, isClass: false };
    }
  };

  while (i < n) {
    const c = source[i]!;
    if (c === '\\') {
      const e = escape(false);
      if ('issue' in e) return refuse(`the pattern uses ${e.issue}`);
      out += e.text;
      i += e.length;
      continue;
    }
    if (c === '[') {
      let j = i + 1;
      let negated = false;
      if (source[j] === '^') {
        negated = true;
        j++;
      }
      if (source[j] === ']') return refuse(negated ? 'the pattern uses [^] (any character)' : 'the pattern uses [] (an empty class)');
      // The class's atoms first, then JavaScript's range grammar over them.
      const items: { kind: 'char' | 'class' | 'dash'; text: string }[] = [];
      let closed = false;
      while (j < n) {
        const d = source[j]!;
        if (d === ']') {
          closed = true;
          j++;
          break;
        }
        if (d === '\\') {
          i = j;
          const e = escape(true);
          if ('issue' in e) return refuse(`the pattern uses ${e.issue}`);
          items.push({ kind: e.isClass ? 'class' : 'char', text: e.text });
          j += e.length;
          continue;
        }
        if (d === '-') items.push({ kind: 'dash', text: '\\-' });
        // `[` and `^` are literal inside a JavaScript class; PCRE reads `[:alpha:]` and a leading `^` specially.
        else items.push({ kind: 'char', text: d === '[' || d === '^' ? `\\${d}` : d });
        j++;
      }
      if (!closed) return refuse('the pattern has an unclosed [');
      let body = '';
      // ECMA-262 NonemptyClassRanges: a range may start with '-' only at the start of the class or right after a range.
      let dashMayStart = true;
      for (let k = 0; k < items.length; ) {
        const a = items[k]!;
        const dash = items[k + 1];
        const b = items[k + 2];
        if ((a.kind !== 'dash' || dashMayStart) && dash?.kind === 'dash' && b !== undefined) {
          // `[\d-z]` is a union in JavaScript (Annex B) and an error in PCRE.
          if (a.kind === 'class' || b.kind === 'class') return refuse('the pattern uses a range next to a class escape (like [\\d-z])');
          body += `${a.text}-${b.text}`;
          k += 3;
          dashMayStart = true;
          continue;
        }
        body += a.text;
        k++;
        dashMayStart = false;
      }
      out += `[${negated ? '^' : ''}${body}]`;
      i = j;
      continue;
    }
    if (c === '(') {
      if (source[i + 1] === '?') {
        const kind = source[i + 2];
        if (kind === ':' || kind === '=' || kind === '!') {
          out += `(?${kind}`;
          i += 3;
          continue;
        }
        if (kind === '<' && (source[i + 3] === '=' || source[i + 3] === '!')) return refuse('the pattern uses lookbehind ((?<= or (?<!)');
        if (kind === '<') {
          const close = source.indexOf('>', i + 3);
          const name = source.slice(i + 3, close);
          if (close < 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return refuse('the pattern uses a group name PCRE cannot take');
          out += `(?<${name}>`;
          i = close + 1;
          continue;
        }
        return refuse(`the pattern uses the group (?${kind ?? ''}`);
      }
      out += '(';
      i++;
      continue;
    }
    if (c === '.') {
      out += JS_DOT;
      i++;
      continue;
    }
    if (c === '$') {
      // JavaScript's $ (no m flag) is the end of the input only; PCRE's also matches before a final newline.
      out += '\\z';
      i++;
      continue;
    }
    if (c === '{') {
      const length = quantifierLength(source, i);
      if (length > 0) {
        out += source.slice(i, i + length);
        i += length;
      } else {
        // A brace that starts no quantifier is a literal in JavaScript (Annex B); PCRE2 reads `{,n}` as a quantifier.
        out += '\\{';
        i++;
      }
      continue;
    }
    if (c === '}' || c === ']') {
      out += `\\${c}`;
      i++;
      continue;
    }
    if (c === '^' || c === '|' || c === ')' || c === '*' || c === '+' || c === '?') {
      out += c;
      i++;
      continue;
    }
    out += c;
    i++;
  }
  return { pattern: out };
}

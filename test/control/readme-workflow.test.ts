import { describe, expect, it } from 'vitest';
import { docBlock } from '../helpers/doc-blocks.js';

// The README shows the release workflow that workflow-doc.test.ts runs as written from
// docs/workflow.md: the two blocks must be the same text, so the front page cannot drift from
// what works.
describe('the README workflow', () => {
  it('is the block docs/workflow.md runs as written', () => {
    const readme = docBlock('README.md', 'commands');
    expect(readme).toBe(docBlock('docs/workflow.md', 'commands'));
    expect(readme).toMatch(/graygate release full .*\n[\s\S]*graygate config apply [\s\S]*graygate release finish /);
  });
});

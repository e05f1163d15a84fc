// The implementation lives in src (explain uses it too); tests keep their familiar names.
export { DescribedFacts as LiteralFacts, describedFacts as makeFacts, type FactsInit } from '../../src/rules/described-facts.js';

// The load loop lives in load.ts; these names stay for the tests that import them from here.
export { startLoad as startBackgroundLoad, type Load as BackgroundLoad } from './load.js';

/**
 * quotaflow's version, compiled in: `quotaflow --version` must not depend on where package.json
 * sits at run time. test/unit/version.test.ts keeps it equal to package.json's "version".
 */
export const VERSION = '0.1.0';

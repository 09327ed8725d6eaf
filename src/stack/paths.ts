import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The repository root, found from this file's location (src/stack/paths.ts). */
export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const KAFKA_OPS_DIR = join(PROJECT_ROOT, 'ops', 'kafka');
export const KAFKA_LIB_DIR = join(KAFKA_OPS_DIR, 'lib');

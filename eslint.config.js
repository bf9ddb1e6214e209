// @ts-check
// ESLint flat config: @eslint/js recommended everywhere, typescript-eslint's recommendedTypeChecked on
// every TypeScript file (src, adapters, bench, test), with types from the tsconfig nearest each file
// (tsconfig.json for src/adapters/bench, test/tsconfig.json for test/). Formatting is Prettier's job
// (.prettierrc.json); none of the rules below is about layout.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  globalIgnores(['dist/', 'build/', 'coverage/', '.cache/', '.kmsgw/', 'node_modules/']),
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  js.configs.recommended,
  {
    files: ['**/*.ts', '**/*.mts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        projectService: {
          // vitest.config.ts sits beside tsconfig.json but is only in test/tsconfig.json (the build must not emit it).
          allowDefaultProject: ['vitest.config.ts'],
          defaultProject: 'tsconfig.json',
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // A promise nobody awaits loses its rejection (and, in a server, can crash it on unhandledRejection).
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // Not in recommendedTypeChecked. Default options: a `default:` branch does not excuse a switch over a
      // union from naming every member, so adding a member (a verb, an error code, a mode) is a lint error
      // at every switch that has to decide about it.
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      // EncryptionBudget.take() returns `void | Promise<void>` on purpose (synchronous inside a reservation), so
      // Promise.all over a mix of both is intended; a list of only non-promises is still reported.
      '@typescript-eslint/await-thenable': ['error', { allowMixedPromiseArrays: true }],
      // The same conventions as tsc's noUnusedLocals/noUnusedParameters: a leading `_` marks a parameter or
      // binding kept for its position, and `const { drop: _, ...rest } = o` is how a property is left out.
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // Fakes implement Promise-returning interfaces (KeyWrapper, adapter loaders, token credentials) with
      // `async` bodies that have nothing to await; `async` is what turns their throws into rejections, as the
      // real implementations behave. Still an error in src/, adapters/ and bench/.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    files: ['test/**/*.test.ts'],
    rules: {
      // Tests read what the gateway wrote (key-store files, INFO replies, audit and log lines) with
      // JSON.parse, then tamper with it or assert on it; the expect() calls are the type check. Typing each
      // parse would only add casts. Still errors in src/, adapters/, bench/ and the test helpers.
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  {
    // Plain JavaScript (the emulators under test/emulators, scripts/, bin/, examples/, this file): no
    // tsconfig covers them (tsconfig.json has no allowJs), so they get the JavaScript rules without type
    // information; the emulators' JSDoc types are not checked here.
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: globals.node },
  },
);

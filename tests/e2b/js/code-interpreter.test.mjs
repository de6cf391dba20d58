import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Sandbox } from '@e2b/code-interpreter'

import { sandbox } from './helpers.mjs'

test('runCode keeps state, streams output and reports errors', async (t) => {
  const sbx = await sandbox(t, {}, Sandbox)
  const first = await sbx.runCode('x = 41\nprint("defined")')
  assert.deepEqual(first.logs.stdout, ['defined\n'])
  assert.equal(first.error, undefined)
  assert.equal((await sbx.runCode('x + 1')).text, '42')

  const out = []
  const err = []
  await sbx.runCode('import sys\nprint("a")\nprint("b", file=sys.stderr)\nprint("c")', {
    onStdout: (m) => out.push(m.line),
    onStderr: (m) => err.push(m.line),
  })
  // the kernel flushes its stdout stream on a timer, so "a" and "c" may come as one message
  assert.equal(out.join(''), 'a\nc\n')
  assert.deepEqual(err, ['b\n'])

  const failed = await sbx.runCode('1 / 0')
  assert.equal(failed.error.name, 'ZeroDivisionError')
  assert.match(failed.error.value, /division by zero/)
  assert.match(failed.error.traceback, /ZeroDivisionError/)
  assert.equal((await sbx.runCode('x')).text, '41')

  const context = await sbx.createCodeContext()
  await assert.rejects(async () => {
    const result = await sbx.runCode('x', { context })
    if (result.error) throw new Error(result.error.name)
  }, /NameError/)
})

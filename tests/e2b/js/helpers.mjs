// Shared by the *.test.mjs files: E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY come from
// tests/e2b/test_js_sdk.py and point the unchanged SDKs at cloche.
import assert from 'node:assert/strict'

import { Sandbox } from 'e2b'

/** A sandbox killed when the test ends, however it ends. */
export async function sandbox(t, opts = {}, cls = Sandbox) {
  const sbx = await cls.create({ timeoutMs: 120_000, ...opts })
  t.after(() => sbx.kill().catch(() => {}))
  return sbx
}

/** `promise` rejects with exactly `cls` (not a subclass's parent) and a message containing `text`. */
export async function rejectsWith(promise, cls, text) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.constructor, cls, `${err.constructor.name}: ${err.message}`)
    assert.match(err.message, new RegExp(text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')))
    return true
  })
}

/** Polls `check` until it is truthy (or fails after `ms`). */
export async function eventually(check, ms = 5_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) assert.fail(`not true after ${ms} ms: ${check}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

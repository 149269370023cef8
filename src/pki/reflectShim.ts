/**
 * Minimal Reflect metadata API, installed only when no polyfill is present.
 *
 * @peculiar/x509 2.x depends on tsyringe, which throws at load time unless `Reflect.getMetadata`
 * exists (the library's README asks for `import "reflect-metadata"`). We are not shipping that
 * package for the handful of calls tsyringe makes (getMetadata, getOwnMetadata, defineMetadata),
 * so this module provides them. Import it BEFORE `@peculiar/x509`: ES modules evaluate their
 * imports in order, so the shim is in place when tsyringe checks.
 *
 * If a full polyfill (reflect-metadata, core-js) is loaded first, it is left untouched.
 */

type MetadataKey = unknown
type PropertyKey = string | symbol | undefined

/** target -> property (undefined for the target itself) -> metadata key -> value */
const store = new WeakMap<object, Map<PropertyKey, Map<MetadataKey, unknown>>>()

function ownMap(target: object, property: PropertyKey, create: boolean): Map<MetadataKey, unknown> | undefined {
  let byProperty = store.get(target)
  if (!byProperty) {
    if (!create) return undefined
    byProperty = new Map()
    store.set(target, byProperty)
  }
  let map = byProperty.get(property)
  if (!map && create) {
    map = new Map()
    byProperty.set(property, map)
  }
  return map
}

const api = {
  defineMetadata(key: MetadataKey, value: unknown, target: object, property?: PropertyKey): void {
    ownMap(target, property, true)?.set(key, value)
  },
  hasOwnMetadata(key: MetadataKey, target: object, property?: PropertyKey): boolean {
    return ownMap(target, property, false)?.has(key) ?? false
  },
  getOwnMetadata(key: MetadataKey, target: object, property?: PropertyKey): unknown {
    return ownMap(target, property, false)?.get(key)
  },
  /** Like getOwnMetadata, but inherited through the prototype chain (as reflect-metadata does). */
  hasMetadata(key: MetadataKey, target: object, property?: PropertyKey): boolean {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      if (api.hasOwnMetadata(key, t, property)) return true
    }
    return false
  },
  getMetadata(key: MetadataKey, target: object, property?: PropertyKey): unknown {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const map = ownMap(t, property, false)
      if (map?.has(key)) return map.get(key)
    }
    return undefined
  },
  /** Decorator form, used by TypeScript's emitted `__metadata` helper. */
  metadata(key: MetadataKey, value: unknown) {
    return (target: object, property?: PropertyKey): void => api.defineMetadata(key, value, target, property)
  },
}

const reflect = Reflect as unknown as Record<string, unknown>
if (typeof reflect.getMetadata !== 'function') {
  for (const [name, fn] of Object.entries(api)) {
    if (typeof reflect[name] !== 'function') reflect[name] = fn
  }
}

export {}

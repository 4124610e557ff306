// What the served OpenAPI document says: the submit form's fields, defaults and bounds, and
// whether this trainer has sweeps. Read once per page load (and again after a reconnect).

import { getJson } from "./api.js";

let documentPromise = null;

export function openapi() {
  if (!documentPromise) {
    documentPromise = getJson("/openapi.json").catch((error) => {
      documentPromise = null;  // try again next time
      throw error;
    });
  }
  return documentPromise;
}

export async function hasSweeps() {
  const doc = await openapi();
  return Boolean(doc.paths && doc.paths["/v1/sweeps"] && doc.paths["/v1/sweeps"].get);
}

/** The job hyperparameters: [{name, type, default, minimum, maximum, enum, description}]. */
export async function trainingFields() {
  const doc = await openapi();
  const schema = doc.components.schemas.TrainingParams;
  return Object.entries(schema.properties).map(([name, property]) => {
    const variants = property.anyOf || [property];
    const typed = variants.find((v) => v.type && v.type !== "null") || {};
    const reference = variants.find((v) => v.$ref);
    let choices = typed.enum;
    if (!choices && reference) {
      const target = doc.components.schemas[reference.$ref.split("/").pop()];
      choices = target && target.enum;
    }
    return {
      name,
      type: choices ? "string" : typed.type || "string",
      choices,
      default: property.default,
      minimum: typed.minimum ?? typed.exclusiveMinimum,
      maximum: typed.maximum ?? typed.exclusiveMaximum,
      description: property.description || "",
      title: property.title || name,
    };
  });
}

// A task's success criteria: the count on every card, the checklist on the task's page.

import { h } from "./dom.js";

// "Criteria 3/5": how many criteria the agent found met, of how many; null without any.
export function criteriaCount(task) {
  const criteria = task.criteria || [];
  if (!criteria.length) return null;
  const met = criteria.filter((criterion) => criterion.met).length;
  return h(
    "span",
    {
      class: "criteria-count",
      dataset: { met: String(met), total: String(criteria.length) },
      title: `${met} of ${criteria.length} success criteria met`,
    },
    `Criteria ${met}/${criteria.length}`,
  );
}

// The criteria one a line, in the order the agent declared them: ✓ or ✗, the name, the detail.
export function criteriaList(criteria) {
  if (!criteria || !criteria.length) return null;
  return h(
    "ul",
    { class: "criteria", "aria-label": "Success criteria" },
    criteria.map((criterion) =>
      h(
        "li",
        { class: `criterion criterion-${criterion.met ? "met" : "unmet"}`, dataset: { met: criterion.met ? "true" : "false" } },
        h("span", { class: "criterion-icon", "aria-hidden": "true" }, criterion.met ? "✓" : "✗"),
        h("span", { class: "criterion-name" }, criterion.name),
        h("span", { class: "visually-hidden" }, criterion.met ? " met" : " not met"),
        criterion.detail ? h("span", { class: "criterion-detail" }, `— ${criterion.detail}`) : null,
      ),
    ),
  );
}

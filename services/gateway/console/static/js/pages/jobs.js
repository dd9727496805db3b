// Jobs: schedules, next runs, success rates and p95s, manual control, run history
// charts and a live feed of runs through WatchJobRuns.

import { get, post, stream } from '../api.js';
import { h, replace, toast, uuid } from '../dom.js';
import { columnChart } from '../chart.js';
import { enumName, percent, relative, seconds, time, timeEl } from '../format.js';
import { errorBox, liveBadge, statusBadge } from '../widgets.js';

const SCHEDULER = 'loom.scheduler.v1.SchedulerService';
const HISTORY_RUNS = 30;
const FEED_LENGTH = 40;
export const RUN_COLOURS = {
  JOB_RUN_STATUS_SUCCEEDED: '#2e7d32',
  JOB_RUN_STATUS_RUNNING: '#1565c0',
  JOB_RUN_STATUS_FAILED: '#ef6c00',
  JOB_RUN_STATUS_DEAD_LETTERED: '#c62828',
  JOB_RUN_STATUS_INTERRUPTED: '#6a1b9a',
  JOB_RUN_STATUS_SKIPPED: '#9e9e9e',
};
const runStatus = (s) => enumName(s, 'JOB_RUN_STATUS_');

function scheduleText(schedule = {}) {
  if (schedule.cron) return `cron ${schedule.cron} (${schedule.timeZone || 'UTC'})`;
  const every = Number(schedule.intervalSeconds || 0);
  if (!every) return 'manual only';
  if (every % 3600 === 0) return `every ${every / 3600} h`;
  if (every % 60 === 0) return `every ${every / 60} min`;
  return `every ${every} s`;
}

function feedItem(run) {
  return h('li', { dataset: { runId: run.runId, status: run.status } },
    statusBadge(runStatus(run.status)), ' ',
    h('strong', {}, run.jobName), ' ',
    h('span', { class: 'muted small' }, `${enumName(run.trigger, 'TRIGGER_KIND_')} · attempt ${run.attempt || 1}`), ' · ',
    timeEl(run.startTime, { seconds: true }),
    run.finishTime ? ` · ${seconds(run.durationSeconds)}` : '',
    run.error ? h('div', { class: 'error-text small' }, run.error) : null);
}

export function renderJobs(main, ctx) {
  const jobsSection = h('div', { class: 'grid jobs' }, h('p', { class: 'muted' }, 'Loading…'));
  const feedBadge = liveBadge();
  const feed = h('ol', { class: 'feed', 'aria-label': 'Job runs, newest first' });
  replace(main, h('h1', {}, 'Jobs'),
    h('section', { class: 'card', 'aria-labelledby': 'feed-heading' },
      h('div', { class: 'title-row' }, h('h2', { id: 'feed-heading' }, 'Live feed of runs'), feedBadge), feed),
    jobsSection);

  const cards = new Map();

  function control(job, card) {
    const buttons = [];
    const act = async (label, path) => {
      try {
        const reply = await post(`/v1/jobs/${encodeURIComponent(job.jobName)}:${path}`, { requestId: uuid() });
        toast(`${job.jobName}: ${label}.`);
        if (reply.job) fillCard(card, reply.job);
        // The run may already have finished (its stream messages can arrive before this reply).
        if (reply.run) upsertFeed(reply.run);
        refreshJob(job.jobName);
      } catch (err) {
        toast(`${job.jobName}: ${err.message}`, 'error');
      }
    };
    if (ctx.can(`${SCHEDULER}/RunJobNow`)) buttons.push(h('button', { type: 'button', class: 'run-now', onclick: () => act('run started', 'run') }, 'Run now'));
    if (ctx.can(`${SCHEDULER}/PauseJob`)) buttons.push(h('button', { type: 'button', class: 'secondary pause', onclick: () => act('paused', 'pause') }, 'Pause'));
    if (ctx.can(`${SCHEDULER}/ResumeJob`)) buttons.push(h('button', { type: 'button', class: 'secondary resume', onclick: () => act('resumed', 'resume') }, 'Resume'));
    return h('div', { class: 'row controls', role: 'group', 'aria-label': `Control ${job.jobName}` }, buttons);
  }

  function newCard(job) {
    const card = h('article', { class: 'card job', dataset: { job: job.jobName }, 'aria-labelledby': `job-${job.jobName}` },
      h('header', {}, h('h2', { id: `job-${job.jobName}` }, job.jobName), h('div', { class: 'badges' })),
      h('p', { class: 'muted small description' }),
      h('dl', { class: 'facts' }),
      h('div', { class: 'summary' }, h('p', { class: 'muted' }, 'Loading…')),
      h('div', { class: 'history' }));
    card.append(control(job, card));
    cards.set(job.jobName, card);
    return card;
  }

  function fillCard(card, job) {
    const fact = (k, ...v) => [h('dt', {}, k), h('dd', {}, ...v)];
    replace(card.querySelector('.badges'), job.paused ? h('span', { class: 'badge warn' }, 'paused') : h('span', { class: 'badge ok' }, 'scheduled'));
    card.querySelector('.description').textContent = `${job.description || ''} → ${job.target || ''}`;
    replace(card.querySelector('.facts'),
      fact('Schedule', scheduleText(job.schedule)),
      fact('Next run', job.paused || !job.nextRunTime ? h('span', { class: 'muted' }, 'none (paused)') : [timeEl(job.nextRunTime), ' ', h('span', { class: 'muted small' }, relative(job.nextRunTime))]),
      fact('Last run', job.lastRun ? [statusBadge(runStatus(job.lastRun.status)), ' ', timeEl(job.lastRun.startTime)] : h('span', { class: 'muted' }, 'never')));
    card.querySelector('.pause')?.toggleAttribute('hidden', !!job.paused);
    card.querySelector('.resume')?.toggleAttribute('hidden', !job.paused);
  }

  async function loadDetails(jobName) {
    const card = cards.get(jobName);
    if (!card) return;
    const [summary, runs] = await Promise.allSettled([
      get(`/v1/jobs/${encodeURIComponent(jobName)}/summary`),
      get('/v1/jobRuns', { jobName, pageSize: HISTORY_RUNS }),
    ]);
    if (summary.status === 'fulfilled') {
      const sm = summary.value;
      const target = sm.targetSuccessRate || 0.95;
      const rate = sm.successRate || 0;
      replace(card.querySelector('.summary'), h('div', { class: 'stats' },
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'success rate'),
          h('span', { class: `stat-value ${sm.runs && rate < target ? 'bad' : ''}` }, sm.runs ? percent(rate, 1) : '—'),
          h('span', { class: 'muted small' }, `target ${percent(target)} · ${sm.runs || 0} runs`)),
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'p95 duration'),
          h('span', { class: 'stat-value' }, sm.runs ? seconds(sm.p95DurationSeconds) : '—'),
          h('span', { class: 'muted small' }, `mean ${seconds(sm.averageDurationSeconds)}`))),
      sm.lastError ? h('p', { class: 'error-text small' }, 'Last error ', timeEl(sm.lastErrorTime), ': ', sm.lastError) : null);
    } else {
      replace(card.querySelector('.summary'), errorBox(summary.reason));
    }
    if (runs.status === 'fulfilled') {
      const list = (runs.value.runs || []).slice().reverse();
      const present = [...new Set(list.map((r) => r.status))];
      replace(card.querySelector('.history'), columnChart(`Duration of the last ${list.length} runs of ${jobName}`,
        list.map((r) => ({
          label: time(r.startTime), value: Number(r.durationSeconds || 0), color: RUN_COLOURS[r.status] || '#777',
          title: `${time(r.startTime, { seconds: true })}: ${runStatus(r.status)}, ${seconds(r.durationSeconds)}`,
        })),
        { format: (v) => seconds(v), empty: 'No runs yet.', legend: present.map((st) => ({ label: runStatus(st), color: RUN_COLOURS[st] || '#777' })) }));
    } else {
      replace(card.querySelector('.history'), errorBox(runs.reason));
    }
  }

  async function loadJobs() {
    try {
      const reply = await get('/v1/jobs');
      const jobs = reply.jobs || [];
      if (!cards.size) replace(jobsSection, jobs.length ? null : h('p', { class: 'muted' }, 'No jobs.'));
      for (const job of jobs) {
        const card = cards.get(job.jobName) || jobsSection.appendChild(newCard(job));
        fillCard(card, job);
      }
      await Promise.all(jobs.map((j) => loadDetails(j.jobName)));
    } catch (err) {
      replace(jobsSection, errorBox(err));
    }
  }

  // A job's card re-read from the scheduler, coalesced: calls while one is waiting join it,
  // calls while one is in flight queue exactly one more, so the last change is always shown.
  const pending = new Map();
  function refreshJob(jobName) {
    const state = pending.get(jobName);
    if (state) {
      state.again = state.timer === null;
      return;
    }
    const entry = { timer: null, again: false };
    pending.set(jobName, entry);
    entry.timer = setTimeout(async () => {
      entry.timer = null;
      try {
        const reply = await get(`/v1/jobs/${encodeURIComponent(jobName)}`);
        const card = cards.get(jobName);
        if (card) fillCard(card, reply.job);
        await loadDetails(jobName);
      } catch { /* the next message or refresh tries again */ }
      pending.delete(jobName);
      if (entry.again) refreshJob(jobName);
    }, 300);
  }

  const FINISHED = (status) => status && status !== 'JOB_RUN_STATUS_RUNNING';
  // A run changed: show it in the feed (never moving a finished run back to running) and refresh its job.
  function upsertFeed(run) {
    const existing = feed.querySelector(`[data-run-id="${CSS.escape(run.runId)}"]`);
    if (existing && FINISHED(existing.dataset.status) && !FINISHED(run.status)) return;
    const item = feedItem(run);
    if (existing) existing.replaceWith(item);
    else feed.prepend(item);
    while (feed.children.length > FEED_LENGTH) feed.lastElementChild.remove();
    refreshJob(run.jobName);
  }
  ctx.onCleanup(() => pending.forEach((entry) => clearTimeout(entry.timer)));

  get('/v1/jobRuns', { pageSize: 20 }).then((reply) => {
    for (const run of (reply.runs || []).slice().reverse()) {
      if (!feed.querySelector(`[data-run-id="${CSS.escape(run.runId)}"]`)) feed.prepend(feedItem(run));
    }
  }).catch((err) => feed.before(errorBox(err)));
  const watch = stream('/v1/jobRuns:watch', {}, {
    onMessage: (msg) => msg.run && upsertFeed(msg.run),
    onStatus: (st) => { feedBadge.dataset.state = st; feedBadge.textContent = st; },
    onError: (err) => { feedBadge.dataset.state = 'closed'; feedBadge.title = err.message; },
  });
  ctx.onCleanup(() => watch.close());
  loadJobs();
  ctx.every(60000, loadJobs);
}

// Package metrics defines kiln's Prometheus collectors. They are created
// in New and registered on the registry it is given, never globally, so
// tests and several kilnds in one process each get their own.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are kiln's collectors. Label values are bounded: app and fn
// names, a small set of statuses, kinds, states and route templates;
// never call ids or raw paths.
type Metrics struct {
	Calls          *prometheus.CounterVec
	CallDuration   *prometheus.HistogramVec
	QueueWait      prometheus.Histogram
	ContainerStart *prometheus.CounterVec
	StartSeconds   prometheus.Histogram
	Containers     *prometheus.GaugeVec
	Evictions      prometheus.Counter
	Timeouts       prometheus.Counter
	Memory         *prometheus.GaugeVec
	HTTPRequests   *prometheus.CounterVec
	StreamTTFB     *prometheus.HistogramVec
	StreamBytes    *prometheus.CounterVec
	Waiting        *prometheus.GaugeVec
	Rejected       *prometheus.CounterVec
	Retired        *prometheus.CounterVec
}

// Buckets for call latency: hot calls take tens of microseconds, cold
// ones tens of milliseconds and slow functions up to the 300 s limit.
var callBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_calls_total", Help: "Function calls by outcome.",
		}, []string{"app", "fn", "status"}),
		CallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kiln_call_duration_seconds", Help: "Time from a call's arrival to its answer.", Buckets: callBuckets,
		}, []string{"app", "fn"}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_queue_wait_seconds", Help: "Time calls waited for a container.", Buckets: callBuckets,
		}),
		ContainerStart: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_container_starts_total", Help: "Containers started, hot (pooled) or cold (one call).",
		}, []string{"app", "fn", "kind"}),
		StartSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_container_start_seconds", Help: "Time to create and start a container.",
			Buckets: []float64{.01, .025, .05, .075, .1, .15, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		Containers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_containers", Help: "Hot containers by state.",
		}, []string{"app", "fn", "state"}),
		Evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_evictions_total", Help: "Idle containers evicted to make room for another fn.",
		}),
		Timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_timeouts_total", Help: "Calls that passed their fn's timeout.",
		}),
		Memory: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_memory_bytes", Help: "Memory for containers: capacity and used (held by live containers).",
		}, []string{"kind"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_http_requests_total", Help: "HTTP requests by route template and status code.",
		}, []string{"route", "code"}),
	}
	m.StreamTTFB = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kiln_stream_first_byte_seconds", Help: "Time from a streamed call's arrival to the first byte of its body.", Buckets: callBuckets,
	}, []string{"app", "fn"})
	m.StreamBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_stream_bytes_total", Help: "Body bytes of streamed responses passed to clients.",
	}, []string{"app", "fn"})
	m.Waiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kiln_calls_waiting", Help: "Calls of a fn waiting for a container (a launch, memory, or its max_instances).",
	}, []string{"app", "fn"})
	m.Rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_calls_rejected_total", Help: "Calls refused (429) because their fn was at its max_concurrency.",
	}, []string{"app", "fn"})
	m.Retired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_containers_retired_total", Help: "Hot containers retired after their fn's max_requests calls.",
	}, []string{"app", "fn"})
	reg.MustRegister(m.Calls, m.CallDuration, m.QueueWait, m.ContainerStart, m.StartSeconds,
		m.Containers, m.Evictions, m.Timeouts, m.Memory, m.HTTPRequests, m.StreamTTFB, m.StreamBytes,
		m.Waiting, m.Rejected, m.Retired)
	return m
}

// ObserveCall records one finished call.
func (m *Metrics) ObserveCall(app, fn, status string, took time.Duration) {
	if m == nil {
		return
	}
	m.Calls.WithLabelValues(app, fn, status).Inc()
	m.CallDuration.WithLabelValues(app, fn).Observe(took.Seconds())
	if status == "timeout" {
		m.Timeouts.Inc()
	}
}

// ObserveStream records one streamed answer: its time to first byte
// (none when it sent no byte) and its size.
func (m *Metrics) ObserveStream(app, fn string, firstByte time.Duration, bytes int64) {
	if m == nil {
		return
	}
	if bytes > 0 {
		m.StreamTTFB.WithLabelValues(app, fn).Observe(firstByte.Seconds())
	}
	m.StreamBytes.WithLabelValues(app, fn).Add(float64(bytes))
}

// ObserveRejected counts one call refused for max_concurrency.
func (m *Metrics) ObserveRejected(app, fn string) {
	if m == nil {
		return
	}
	m.Rejected.WithLabelValues(app, fn).Inc()
}

// ObserveRetired counts one container retired for max_requests.
func (m *Metrics) ObserveRetired(app, fn string) {
	if m == nil {
		return
	}
	m.Retired.WithLabelValues(app, fn).Inc()
}

// SetContainers records a fn's hot containers by state, and its calls
// waiting for one.
func (m *Metrics) SetContainers(app, fn string, starting, idle, busy, waiting int) {
	if m == nil {
		return
	}
	m.Waiting.WithLabelValues(app, fn).Set(float64(waiting))
	m.Containers.WithLabelValues(app, fn, "starting").Set(float64(starting))
	m.Containers.WithLabelValues(app, fn, "idle").Set(float64(idle))
	m.Containers.WithLabelValues(app, fn, "busy").Set(float64(busy))
}

// SetMemory records capacity and use, given in MB.
func (m *Metrics) SetMemory(usedMB, capacityMB int64) {
	if m == nil {
		return
	}
	m.Memory.WithLabelValues("used").Set(float64(usedMB << 20))
	m.Memory.WithLabelValues("capacity").Set(float64(capacityMB << 20))
}

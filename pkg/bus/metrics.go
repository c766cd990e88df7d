package bus

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts consumer outcomes. Build one per registry and share it.
type Metrics struct {
	handled *prometheus.CounterVec
}

// NewMetrics registers the bus metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callvault",
			Subsystem: "bus",
			Name:      "messages_handled_total",
			Help:      "Messages handled by a consumer, by outcome (ok, retry, dead_letter).",
		}, []string{"consumer", "status"}),
	}
	reg.MustRegister(m.handled)
	return m
}

func (m *Metrics) observe(consumer, status string) {
	if m != nil {
		m.handled.WithLabelValues(consumer, status).Inc()
	}
}
